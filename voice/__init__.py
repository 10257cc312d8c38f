"""The voice loop: a websocket server, per-connection sessions, turn-taking over Silero VAD, and TTS.

Modules, each owning one concern:

- :mod:`voice.config`    the ``EMO_VOICE__*`` settings section (:class:`~voice.config.VoiceSettings`).
- :mod:`voice.protocol`  JSON messages in, JSON events out, typed; :class:`~voice.protocol.ProtocolError`.
- :mod:`voice.resample`  streaming resampling of the client's audio to 16 kHz.
- :mod:`voice.vad`       Silero VAD (ONNX): one shared model, per-session state.
- :mod:`voice.turns`     sans-I/O turn-taking and barge-in state machine.
- :mod:`voice.sentences` incremental sentence splitting of streamed reply text.
- :mod:`voice.tts`       the :class:`~voice.tts.TTS` role and the Piper backend.
- :mod:`voice.playback`  sans-I/O playback estimate of a spoken reply: pacing, and what the user heard.
- :mod:`voice.records`   the trajectory :class:`~voice.records.TurnRecord` rows of a turn, WAV of kept audio.
- :mod:`voice.services`  protocols for what the voice loop is given (perceiver, dialogue, TTS, log).
- :mod:`voice.pipeline`  one turn: perceive → reply stream → sentences → TTS → paced audio; its ending.
- :mod:`voice.session`   one connection: reader and writer tasks, message dispatch, one turn task at a time.
- :mod:`voice.server`    HTTP (page, static files, health, trajectory) and the ``/ws`` websocket.
- :mod:`voice.client`    a command-line and library client.
"""
