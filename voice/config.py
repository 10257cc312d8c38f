"""The voice section of the configuration tree (``EMO_VOICE__*``).

A plain model: the voice package never reads the environment; ``agent.config.Settings`` composes this
section into the one ``EMO_`` tree and passes it in.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class VoiceSettings(BaseModel):
    """Turn-taking, barge-in and speech output."""

    # Silero speech probability above which a chunk counts as speech.
    vad_threshold: float = 0.5
    # Silence that ends a turn. Shorter answers faster but cuts people who pause mid-sentence.
    min_silence_ms: int = 500
    # Speech needed before a turn starts (filters clicks and coughs).
    min_speech_ms: int = 200
    # Audio kept from before the detected start, so the first syllable is not clipped.
    pre_roll_ms: int = 300
    # A turn is cut at this length even without a pause.
    max_turn_s: float = 30.0
    # Speech during a reply that lasts this long interrupts the reply (barge-in).
    barge_in_ms: int = 300
    # Silence after which the turn's perception and reply start speculatively, while the VAD waits for
    # min_silence_ms to confirm the turn ended; nothing of it is sent before then, and speech resuming
    # drops it unheard. 0: no speculation (work starts when the turn ends). docs/testing.md has the
    # measurement behind the default.
    speculative_pause_ms: int = Field(default=120, ge=0)
    # Stream the reply: speak its first clause while the rest is written. False: the whole reply text is
    # generated before speech starts (the sequential reference the latency bench compares against).
    stream_reply: bool = True
    # Largest accepted JSON text frame and typed turn.
    max_text_chars: int = 2000
    max_message_bytes: int = 1 << 20
    # The reply's first spoken piece may end at a clause break (",", ";", ":", a dash) once it has this
    # many characters, so speech starts before the whole first sentence is written and synthesised.
    # 0: speak whole sentences only.
    first_clause_chars: int = Field(default=40, ge=0)
    # Piper voice: empty means the bundled en_US-joe-medium.
    tts_voice: str = ""
    tts_enabled: bool = True
    # onnxruntime threads for Piper; 0 lets onnxruntime use every core (docs/testing.md has the measurement).
    tts_threads: int = Field(default=0, ge=0)

    # ---- access and limits (docs/voice.md, "Security and limits") ----
    # Shared access token. Empty: no token needed (the default, for a server on 127.0.0.1). Set: the
    # websocket, /metrics and /sessions/{id}/trajectory need it (``Authorization: Bearer TOKEN``, the
    # subprotocol ``emo-agent.token.TOKEN`` or ``?access_token=TOKEN``); /health and the page's files
    # stay open (they hold no data).
    auth_token: SecretStr = SecretStr("")
    # Origins (e.g. "https://talk.example.org") whose pages may open the websocket, besides the page this
    # server serves itself (an Origin naming the request's own Host). "*" allows any. Clients that send
    # no Origin (the CLI, scripts) are not browsers and are always let through to the token check.
    allowed_origins: list[str] = Field(default_factory=list)
    # Open sessions on the whole server, and from one client address; over either, a new connection gets
    # an ``error`` (server_busy / too_many_sessions) and is closed with 1013 (try again later). 0: no limit.
    max_sessions: int = Field(default=64, ge=0)
    max_sessions_per_client: int = Field(default=16, ge=0)
    # Per-connection token bucket over incoming frames: ``message_rate`` frames a second on average, bursts
    # of up to ``message_burst``. A microphone sends 50 frames a second; a file streamed as fast as the
    # network allows is one burst. Frames over it are dropped with an ``error`` (rate_limited). 0: no limit.
    message_rate: float = Field(default=200.0, ge=0)
    message_burst: int = Field(default=2000, ge=1)
    # Keepalive: a ping every ``ping_interval_s``; no pong within ``ping_timeout_s`` closes the connection
    # (1011), so a vanished client (laptop lid shut, network gone) frees its session. 0 turns pings off.
    ping_interval_s: float = Field(default=20.0, ge=0)
    ping_timeout_s: float = Field(default=20.0, ge=0)
    # A connection that sends no frame for this long gets an ``error`` (idle_timeout) and is closed with
    # 1000, even if it answers pings. 0: never (a page left open keeps its session).
    idle_timeout_s: float = Field(default=0.0, ge=0)
    # On SIGTERM/SIGINT the server stops accepting connections and lets the replies in progress finish for
    # at most this long; then every session is closed with 1001, a reply still running cut as by barge-in.
    drain_timeout_s: float = Field(default=10.0, ge=0)
