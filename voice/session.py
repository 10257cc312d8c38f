"""One websocket connection: the voice loop of one conversation.

A :class:`Session` owns exactly three kinds of task, and cancels every one it starts:

- the **reader** parses client frames (:mod:`voice.protocol`), feeds audio through the resampler and the
  sans-I/O :class:`~voice.turns.TurnDetector`, and starts, interrupts or refuses turns;
- the **writer** drains the outbound queue onto the socket (JSON text frames and binary PCM);
- one **turn task** at a time: perceive the turn (worker thread) → ``user.perception`` → stream the dialogue's
  reply → ``assistant.delta`` events, each complete sentence to TTS (worker thread) → binary PCM frames of at
  most ~100 ms, sent no faster than the client can play them (at most ``playback_lead_s`` ahead) →
  ``assistant.text`` when the text is complete → ``assistant.done`` once the audio has been played.

:meth:`Session.run` waits on reader and writer with ``asyncio.wait(FIRST_COMPLETED)`` and cancels the rest.

Barge-in: speech lasting ``barge_in_ms`` while a reply is being spoken, or a new turn (audio or typed) while
one is in progress, cancels the turn task. When the reply had begun, the session sends
``assistant.interrupted`` with ``heard_text`` (what the user has heard by then, estimated by replaying the
sentence timeline against the wall clock since the first audio frame), tells the dialogue engine
(``mark_interrupted``) and logs the turn as interrupted. Audio of a cancelled reply still queued is dropped.

After every turn that reached the reply, two :class:`~agent.trajectory.TurnRecord` rows are appended: the
user's (perception fields) and the assistant's (policy, text heard, interrupted, ``latency_ms`` per stage,
measured from the moment the turn ended: ``perception``, ``llm_first_token``, ``first_sentence``,
``first_audio_byte``, ``reply_text``, ``total``, plus the dialogue's own timings as ``dialogue_*``).
Times: the user's record spans the speech (its end is when the turn's last audio arrived, its start that minus
the turn's audio length); the assistant's spans the playback (first audio frame to the end of playback or the
interruption), or the streamed text when there is no TTS. A session whose ``consent`` (``session.start``, or
the log's ``consent_default``) is false writes no record at all; with the log's ``keep_audio`` on, the user
turn's 16 kHz audio is stored as WAV and referenced by ``audio_ref``.

Every bad input becomes an ``error`` event and the connection stays open; a failing turn (unusable audio,
a model error) becomes an ``error`` event too. A reply that fails after it has begun (e.g. TTS on a later
sentence) then ends like an interrupted one: ``assistant.interrupted`` with what was heard once the audio sent
has played, ``mark_interrupted`` and an interrupted record. A perception whose turn was dropped meanwhile is
not folded into the speaker baseline (it runs against a copy that is kept only for live turns).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import io
import logging
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from websockets.exceptions import ConnectionClosed

from agent.trajectory import TurnRecord
from dialogue.events import PolicyChosen, Prosody, ReplyDone, ReplyEvent, TextDelta
from perception.base import AudioError, Perceiver, SpeakerBaseline
from perception.types import Perception
from voice import protocol as proto
from voice.protocol import ErrorCode, ProtocolError
from voice.resample import StreamingResampler
from voice.sentences import SentenceSplitter
from voice.turns import (
    SAMPLE_RATE,
    BargeIn,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEnded,
    TurnEvent,
    TurnSettings,
)

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from voice.config import VoiceSettings
    from voice.tts import TTS
    from voice.vad import SileroVAD

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_SAMPLE_RATE = 22_050
AUDIO_FRAME_MS = 100
# Frames larger than this many VAD chunks are run through the VAD in a worker thread, not on the loop.
_INLINE_VAD_CHUNKS = 16


class DialogueLike(Protocol):
    """What a session needs from :class:`dialogue.engine.DialogueEngine`."""

    async def start_session(self, session_id: str) -> bool: ...

    def reply(
        self, session_id: str, turn_id: str, user_text: str, perception: Perception
    ) -> AsyncIterator[ReplyEvent]: ...

    async def mark_interrupted(self, session_id: str, turn_id: str, heard_text: str) -> Any: ...


class TrajectoryLike(Protocol):
    """What a session needs from :class:`agent.trajectory.TrajectoryLog` (the attributes
    ``consent_default``, ``keep_audio`` and ``dialogue_model`` are read when present)."""

    async def append(self, record: TurnRecord) -> Any: ...

    async def store_audio(self, session_id: str, turn_id: str, wav: bytes) -> str: ...


class ServicesLike(Protocol):
    """The parts of :class:`agent.wiring.Services` a session uses."""

    perceiver: Perceiver
    dialogue: DialogueLike
    tts: TTS | None
    trajectory: TrajectoryLike | None


@dataclass
class _SpokenSentence:
    text: str
    start_s: float  # position in the reply's audio
    end_s: float


@dataclass
class _Reply:
    """The reply part of a turn, as far as it got. Read by the session when it interrupts the turn."""

    t_start_wall: float
    first_output_wall: float | None = None  # epoch time of the first audio frame (or text, without TTS)
    policy: str = ""
    prosody: Prosody | None = None
    text: str = ""  # streamed text so far (assistant.delta)
    final_text: str | None = None
    spoken: list[_SpokenSentence] = field(default_factory=list)
    audio_sent_s: float = 0.0
    play_origin: float | None = None  # monotonic time at which audio position 0 plays on the client

    def position(self, now: float) -> float:
        """Seconds of reply audio the client has played by ``now`` (monotonic)."""
        if self.play_origin is None:
            return 0.0
        return min(max(0.0, now - self.play_origin), self.audio_sent_s)

    def heard_text(self, now: float, speaking: bool) -> str:
        """What the user has heard by ``now``: whole sentences played, plus the played share of the words
        of the sentence playing. Without TTS (``speaking`` False) the user has read the streamed text."""
        if not speaking:
            return self.text.strip()
        pos = self.position(now)
        heard: list[str] = []
        for s in self.spoken:
            if s.end_s <= pos + 1e-6:  # (sentence ends and the frame sum differ by rounding)
                heard.append(s.text)
            elif s.start_s < pos:
                words = s.text.split()
                share = (pos - s.start_s) / max(1e-6, s.end_s - s.start_s)
                n = int(len(words) * share)
                if n:
                    heard.append(" ".join(words[:n]))
                break
            else:
                break
        return " ".join(heard)


@dataclass
class _Turn:
    turn_id: str
    t_start_wall: float  # epoch seconds the user's turn began
    t_end_wall: float  # epoch seconds the turn ended (VAD end, flush, typed text received)
    t_end_mono: float
    audio: np.ndarray | None = None
    text: str | None = None
    perception: Perception | None = None
    reply: _Reply | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    finished: bool = False  # assistant.done sent; only the trajectory record may still be being written
    cancelled: bool = False  # dropped by the session: its perception must not touch the speaker baseline
    closing: asyncio.Task[None] | None = None  # the session's interruption of this turn, once begun

    def mark(self, stage: str) -> None:
        """Record the latency of ``stage`` (ms since the turn ended), first occurrence only."""
        self.latency_ms.setdefault(stage, round((time.monotonic() - self.t_end_mono) * 1000, 1))


_CLOSE = object()


class Session:
    """The voice loop of one connection. Create per connection, then ``await run()``."""

    def __init__(
        self,
        ws: ServerConnection,
        services: ServicesLike,
        settings: VoiceSettings,
        vad: SileroVAD,
        *,
        playback_lead_s: float = 0.5,
    ) -> None:
        self._ws = ws
        self._perceiver = services.perceiver
        self._dialogue = services.dialogue
        self._tts = services.tts if settings.tts_enabled else None
        self._trajectory = services.trajectory
        self._settings = settings
        self._vad = vad
        self._playback_lead_s = playback_lead_s
        self._outbound: asyncio.Queue[Any] = asyncio.Queue()
        self._dropped_turns: set[str] = set()
        self.session_id: str | None = None
        self.consent = True  # trajectory-log consent in effect, set by session.start
        self._baseline: SpeakerBaseline | None = None
        self._perceive_lock = threading.Lock()
        self._resampler: StreamingResampler | None = None
        self._detector: TurnDetector | None = None
        self._turn: _Turn | None = None
        self._vad_turn_since_flush = False
        # (seconds of 16 kHz audio received so far, epoch time it arrived), one entry per audio frame: maps
        # the detector's audio times onto the wall clock, whether the client streams live or faster.
        self._arrivals: deque[tuple[float, float]] = deque()
        self._audio_s = 0.0
        self._log: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(log, {})

    @property
    def output_sample_rate(self) -> int:
        return self._tts.sample_rate if self._tts is not None else DEFAULT_OUTPUT_SAMPLE_RATE

    # ------------------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the connection until the client leaves, sends ``session.end`` or the socket fails.

        Cancellation-safe: cancelling ``run`` cancels reader, writer and any turn, then closes the socket.
        """
        reader = asyncio.create_task(self._read_loop(), name="voice-reader")
        writer = asyncio.create_task(self._write_loop(), name="voice-writer")
        try:
            done, _pending = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, ConnectionClosed):
                    self._log.error("session task failed", exc_info=exc)
        finally:
            for task in (reader, writer):
                task.cancel()
            await self._interrupt_turn(notify=False)
            await asyncio.gather(reader, writer, return_exceptions=True)
            await self._ws.close()
            self._log.info("session closed")

    async def _write_loop(self) -> None:
        """Drain the outbound queue onto the socket until the close sentinel. Cancellation-safe (drops what
        is left). Once the socket has closed, everything still queued is dropped: the reader notices the
        close and ends the session, so the turn in progress is still interrupted and logged."""
        closed = False
        while True:
            item = await self._outbound.get()
            try:
                if item is _CLOSE:
                    return
                payload, turn_id = item
                if closed or (isinstance(payload, bytes) and turn_id in self._dropped_turns):
                    continue
                try:
                    await self._ws.send(payload)
                except ConnectionClosed:
                    self._log.info("connection closed while sending; dropping what is queued")
                    closed = True
            finally:
                self._outbound.task_done()

    async def _read_loop(self) -> None:
        """Handle client frames in order until ``session.end`` or disconnect."""
        async for frame in self._ws:
            try:
                if isinstance(frame, bytes):
                    await self._on_audio(frame)
                elif await self._on_text(frame):
                    break
            except ProtocolError as exc:
                self._log.info("bad input: %s", exc)
                self._send_error(exc.code, exc.message)
            except Exception as exc:  # a bug must not take the connection (or the server) down
                self._log.exception("error handling a frame")
                self._send_error(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        await self._interrupt_turn()
        self._outbound.put_nowait(_CLOSE)
        await self._outbound.join()

    # -------------------------------------------------------------------------------------------- sending

    def _send(self, event: dict[str, Any]) -> None:
        self._outbound.put_nowait((proto.encode(event), None))

    def _send_audio(self, pcm: bytes, turn_id: str) -> None:
        self._outbound.put_nowait((pcm, turn_id))

    def _send_error(self, code: str, message: str) -> None:
        self._send(proto.error_event(code, message))

    # -------------------------------------------------------------------------------------------- reading

    async def _on_text(self, data: str) -> bool:
        """Handle one JSON frame; True when the session should end."""
        s = self._settings
        msg = proto.parse_text_frame(
            data, max_text_chars=s.max_text_chars, max_message_bytes=s.max_message_bytes
        )
        if isinstance(msg, proto.SessionStart):
            await self._start_session(msg)
            return False
        if isinstance(msg, proto.SessionEnd):
            return True
        if self.session_id is None:
            raise ProtocolError(ErrorCode.NOT_STARTED, "send session.start first")
        if isinstance(msg, proto.InputText):
            now = time.time()
            await self._start_turn(_Turn(_new_turn_id(), now, now, time.monotonic(), text=msg.text))
        elif isinstance(msg, proto.InputFlush):
            await self._flush()
        return False

    async def _start_session(self, msg: proto.SessionStart) -> None:
        if self.session_id is not None:
            raise ProtocolError(ErrorCode.ALREADY_STARTED, f"session {self.session_id} already started")
        session_id = msg.session_id or uuid.uuid4().hex
        try:
            resumed = bool(await self._dialogue.start_session(session_id))
            baseline = await asyncio.to_thread(self._perceiver.new_baseline)
        except Exception as exc:
            self._log.exception("session start failed")
            raise ProtocolError(ErrorCode.SESSION_FAILED, f"{type(exc).__name__}: {exc}") from exc
        self.session_id = session_id
        self.consent = msg.consent if msg.consent is not None else _consent_default(self._trajectory)
        self._baseline = baseline
        self._resampler = StreamingResampler(msg.sample_rate, SAMPLE_RATE)
        turn_settings = TurnSettings.from_voice_settings(self._settings)
        self._detector = TurnDetector(self._vad.new_stream(), turn_settings)
        self._log = logging.LoggerAdapter(log, {"session_id": session_id})
        self._log.info(
            "session %s started (resumed=%s, input %d Hz, consent=%s)",
            session_id,
            resumed,
            msg.sample_rate,
            self.consent,
        )
        self._send(proto.session_started_event(session_id, resumed, self.output_sample_rate, self.consent))

    async def _on_audio(self, data: bytes) -> None:
        if self._detector is None or self._resampler is None:
            raise ProtocolError(ErrorCode.NOT_STARTED, "send session.start before audio")
        proto.check_audio_frame(data, max_message_bytes=self._settings.max_message_bytes)
        samples = self._resampler.process(proto.pcm16_to_float32(data))
        self._note_arrival(len(samples))
        await self._feed(samples)

    def _note_arrival(self, n_samples: int) -> None:
        now = time.time()
        self._audio_s += n_samples / SAMPLE_RATE
        self._arrivals.append((self._audio_s, now))
        horizon = self._settings.max_turn_s + self._settings.pre_roll_ms / 1000 + 5.0
        while len(self._arrivals) > 1 and self._arrivals[1][0] < self._audio_s - horizon:
            self._arrivals.popleft()

    def _wall_time(self, audio_s: float) -> float:
        """Epoch time at which the audio at ``audio_s`` (seconds since the session started) arrived."""
        for end_s, wall in self._arrivals:
            if end_s >= audio_s - 1e-6:
                return wall
        return time.time()

    async def _feed(self, samples: np.ndarray) -> None:
        assert self._detector is not None
        if len(samples) > _INLINE_VAD_CHUNKS * 512:
            events = await asyncio.to_thread(self._detector.feed, samples)
        else:
            events = self._detector.feed(samples)
        await self._on_turn_events(events)

    async def _flush(self) -> None:
        assert self._detector is not None and self._resampler is not None
        tail = self._resampler.flush()
        self._note_arrival(len(tail))
        await self._feed(tail)
        events = self._detector.flush()
        vad_turn_before = self._vad_turn_since_flush
        self._vad_turn_since_flush = False
        if not any(isinstance(e, TurnEnded) for e in events):
            if vad_turn_before:
                self._log.debug("input.flush after a turn the VAD already ended: nothing to do")
                return
            raise ProtocolError(ErrorCode.NO_SPEECH, "input.flush, but no speech since the previous turn")
        await self._on_turn_events(events)

    async def _on_turn_events(self, events: list[TurnEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                self._send(proto.speech_started_event())
            elif isinstance(event, SpeechStopped):
                self._send(proto.speech_stopped_event())
            elif isinstance(event, BargeIn):
                turn = self._turn
                if turn is not None and turn.reply is not None:
                    self._log.info("barge-in during turn %s", turn.turn_id)
                    await self._interrupt_turn()
            elif isinstance(event, TurnEnded):
                if event.reason != "flush":
                    self._vad_turn_since_flush = True
                # The speech window: ends when its last audio arrived, lasts as long as its audio (also
                # right when a client streams a file faster than real time).
                t_end = self._wall_time(event.t_end)
                t_start = t_end - (event.t_end - event.t_start)
                turn = _Turn(_new_turn_id(), t_start, t_end, time.monotonic(), audio=event.audio)
                self._log.info("turn %s ended (%s, %.2f s)", turn.turn_id, event.reason, event.duration_s)
                await self._start_turn(turn)

    # ---------------------------------------------------------------------------------------------- turns

    async def _start_turn(self, turn: _Turn) -> None:
        """Interrupt the turn in progress (the newest turn wins), then run ``turn`` in its own task."""
        await self._interrupt_turn()
        turn.task = asyncio.create_task(self._run_turn(turn), name=f"voice-turn-{turn.turn_id}")
        self._turn = turn

    async def _interrupt_turn(self, *, notify: bool = True) -> None:
        """Cancel the turn in progress, if any, and wait for it to unwind. If its reply had begun: send
        ``assistant.interrupted`` (when ``notify``), tell the dialogue engine and log the turn.

        The bookkeeping runs in its own task, shielded: cancelling the caller (the session closing while
        the reader interrupts a turn) does not lose the record, and ``self._turn`` is cleared only once it
        is written, so a later call waits for the same bookkeeping instead of skipping it."""
        turn = self._turn
        if turn is None:
            return
        if turn.closing is None:
            turn.closing = asyncio.create_task(
                self._close_turn(turn, notify), name=f"voice-close-{turn.turn_id}"
            )
        await asyncio.shield(turn.closing)
        if self._turn is turn:
            self._turn = None

    async def _close_turn(self, turn: _Turn, notify: bool) -> None:
        if turn.task is None or turn.task.done():
            return
        if turn.finished:  # nothing left to interrupt: let its record be written once, as not interrupted
            await asyncio.wait([turn.task])
            return
        now = time.monotonic()
        turn.cancelled = True
        self._dropped_turns.add(turn.turn_id)
        turn.task.cancel()
        await asyncio.wait([turn.task])
        if self._detector is not None:
            self._detector.assistant_speaking = False
        reply = turn.reply
        if reply is None or self.session_id is None:
            self._log.info("turn %s cancelled before its reply", turn.turn_id)
            return
        heard = reply.heard_text(now, speaking=self._tts is not None)
        self._log.info("turn %s interrupted; heard %r", turn.turn_id, heard)
        if notify:
            self._send(proto.assistant_interrupted_event(turn.turn_id, heard))
        await self._log_interrupted(turn, heard)

    async def _log_interrupted(self, turn: _Turn, heard: str) -> None:
        """Tell the dialogue engine what was heard of ``turn``'s reply and log the turn as interrupted."""
        assert self.session_id is not None
        try:
            await self._dialogue.mark_interrupted(self.session_id, turn.turn_id, heard)
        except Exception:
            self._log.exception("mark_interrupted failed")
        await self._record(turn, heard, interrupted=True)

    async def _run_turn(self, turn: _Turn) -> None:
        """The turn task. Cancellation-safe: the session interrupts it at any await."""
        try:
            await self._turn_body(turn)
        except asyncio.CancelledError:
            raise
        except Exception as raised:
            exc = _first_leaf(raised)
            if isinstance(exc, AudioError):
                self._log.info("turn %s: unusable audio: %s", turn.turn_id, exc)
                self._send_error(ErrorCode.AUDIO_ERROR, str(exc))
            else:
                self._log.error("turn %s failed", turn.turn_id, exc_info=exc)
                self._send_error(ErrorCode.TURN_FAILED, f"{type(exc).__name__}: {exc}")
                reply = turn.reply
                if reply is not None and (reply.text or reply.audio_sent_s > 0):
                    await self._end_failed_reply(turn, reply)
        finally:
            if self._turn is turn and self._detector is not None:
                self._detector.assistant_speaking = False

    async def _end_failed_reply(self, turn: _Turn, reply: _Reply) -> None:
        """A reply that failed after it had begun ends like an interrupted one: the client plays what it
        got, then gets ``assistant.interrupted`` with that text; the dialogue keeps only that text and the
        turn is logged as interrupted."""
        await asyncio.sleep(max(0.0, reply.audio_sent_s - reply.position(time.monotonic())))
        turn.finished = True  # from here on a newer turn waits for this bookkeeping instead of repeating it
        self._dropped_turns.add(turn.turn_id)
        heard = reply.heard_text(time.monotonic(), speaking=self._tts is not None)
        self._log.info("turn %s: reply failed; heard %r", turn.turn_id, heard)
        self._send(proto.assistant_interrupted_event(turn.turn_id, heard))
        await self._log_interrupted(turn, heard)

    def _perceive(self, audio: np.ndarray, turn: _Turn) -> Perception:
        """Perceive ``audio`` in a worker thread against a private copy of the speaker baseline; the copy
        becomes the baseline only if ``turn`` was not dropped meanwhile (the thread cannot be stopped)."""
        with self._perceive_lock:  # perceptions update the baseline one at a time
            live = self._baseline
            private = _copy_baseline(live) if live is not None else None
            if private is None:  # no baseline, or one that cannot be copied: updated in place
                return self._perceiver.perceive(audio, SAMPLE_RATE, live)
            perception = self._perceiver.perceive(audio, SAMPLE_RATE, private)
            if not turn.cancelled:
                self._baseline = private
            return perception

    async def _turn_body(self, turn: _Turn) -> None:
        assert self.session_id is not None
        if turn.audio is not None:
            perception = await asyncio.to_thread(self._perceive, turn.audio, turn)
        else:
            perception = await asyncio.to_thread(self._perceiver.perceive_text, turn.text or "")
        turn.mark("perception")
        turn.perception = perception
        self._send(proto.user_perception_event(turn.turn_id, perception))

        turn.reply = reply = _Reply(t_start_wall=time.time())
        if self._detector is not None:
            self._detector.assistant_speaking = True
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:  # both children are owned by (and die with) the turn
            group.create_task(self._generate(turn, perception, sentences))
            group.create_task(self._speak(turn, sentences))
        # Let the client finish playing what was sent before declaring the reply done.
        await asyncio.sleep(max(0.0, reply.audio_sent_s - reply.position(time.monotonic())))
        turn.mark("total")
        turn.finished = True
        # Recorded before ``assistant.done``: a client that leaves right after it loses nothing.
        await self._record(turn, reply.final_text or reply.text, interrupted=False)
        self._send(proto.assistant_done_event(turn.turn_id))
        if self._detector is not None and self._turn is turn:
            self._detector.assistant_speaking = False

    async def _generate(
        self, turn: _Turn, perception: Perception, sentences: asyncio.Queue[str | None]
    ) -> None:
        """Stream the dialogue reply: deltas out, whole sentences to the speaker, then ``assistant.text``."""
        assert self.session_id is not None and turn.reply is not None
        reply = turn.reply
        splitter = SentenceSplitter(first_clause_chars=self._settings.first_clause_chars)
        stream: Any = self._dialogue.reply(self.session_id, turn.turn_id, perception.transcript, perception)
        if inspect.isawaitable(stream):
            stream = await stream
        try:
            async for event in stream:
                if isinstance(event, PolicyChosen):
                    reply.policy, reply.prosody = event.policy, event.prosody
                elif isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    turn.mark("llm_first_token")
                    if self._tts is None and reply.first_output_wall is None:
                        reply.first_output_wall = time.time()
                    reply.text += event.text
                    self._send(proto.assistant_delta_event(turn.turn_id, event.text))
                    for sentence in splitter.push(event.text):
                        turn.mark("first_sentence")
                        await sentences.put(sentence)
                elif isinstance(event, ReplyDone):
                    reply.final_text = event.text
                    reply.policy = event.policy or reply.policy
                    for stage, ms in event.timings_ms.items():
                        turn.latency_ms[f"dialogue_{stage}"] = float(ms)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if not reply.text and reply.final_text:  # an engine that only reports the whole reply
            reply.text = reply.final_text
            for sentence in splitter.push(reply.final_text):
                await sentences.put(sentence)
        rest = splitter.finish()
        if rest:
            turn.mark("first_sentence")
            await sentences.put(rest)
        await sentences.put(None)
        turn.mark("reply_text")
        self._send(proto.assistant_text_event(turn.turn_id, reply.final_text or reply.text, reply.policy))

    async def _speak(self, turn: _Turn, sentences: asyncio.Queue[str | None]) -> None:
        """Synthesize sentences in order and send their PCM, paced to at most ``playback_lead_s`` ahead."""
        assert turn.reply is not None
        reply = turn.reply
        while (sentence := await sentences.get()) is not None:
            if self._tts is None:
                continue
            pcm = await asyncio.to_thread(_synthesize_all, self._tts, sentence, reply.prosody)
            if not pcm:
                continue
            rate = self._tts.sample_rate
            duration = len(pcm) / 2 / rate
            reply.spoken.append(_SpokenSentence(sentence, reply.audio_sent_s, reply.audio_sent_s + duration))
            frame_bytes = max(2, rate * AUDIO_FRAME_MS // 1000 * 2)
            for offset in range(0, len(pcm), frame_bytes):
                frame = pcm[offset : offset + frame_bytes]
                now = time.monotonic()
                if reply.play_origin is None or now - reply.play_origin > reply.audio_sent_s:
                    # Nothing left to play on the client: this frame starts playing on arrival.
                    reply.play_origin = now - reply.audio_sent_s
                ahead = reply.audio_sent_s - (now - reply.play_origin)
                if ahead > self._playback_lead_s:
                    await asyncio.sleep(ahead - self._playback_lead_s)
                turn.mark("first_audio_byte")
                if reply.first_output_wall is None:
                    reply.first_output_wall = time.time()
                self._send_audio(frame, turn.turn_id)
                reply.audio_sent_s += len(frame) / 2 / rate

    async def _record(self, turn: _Turn, heard: str, *, interrupted: bool) -> None:
        """Append the user's and the assistant's :class:`TurnRecord`; failures are logged, not raised."""
        if self._trajectory is None or self.session_id is None or turn.perception is None or not self.consent:
            return
        p = turn.perception
        reply = turn.reply
        user = TurnRecord(
            session_id=self.session_id,
            turn_id=turn.turn_id,
            speaker="user",
            t_start=turn.t_start_wall,
            t_end=turn.t_end_wall,
            transcript=p.transcript,
            label=p.emotion.label,
            scores=p.emotion.scores,
            valence=p.emotion.valence,
            arousal=p.emotion.arousal,
            reasoning=p.reasoning,
            evidence=[e.model_dump(mode="json", exclude_none=True) for e in p.evidence],
            model=p.model,
            latency_ms={f"perception_{k}": float(v) for k, v in p.timings_ms.items()},
        )
        started = (reply.first_output_wall or reply.t_start_wall) if reply else turn.t_end_wall
        assistant = TurnRecord(
            session_id=self.session_id,
            turn_id=turn.turn_id,
            speaker="assistant",
            t_start=started,
            t_end=max(started, time.time()),
            transcript=heard,
            policy=reply.policy if reply else None,
            model=getattr(self._trajectory, "dialogue_model", None),
            interrupted=interrupted,
            latency_ms=dict(turn.latency_ms),
        )
        try:
            if turn.audio is not None and getattr(self._trajectory, "keep_audio", False):
                wav = _wav_bytes(turn.audio)
                user.audio_ref = await self._trajectory.store_audio(self.session_id, turn.turn_id, wav)
            await self._trajectory.append(user)
            await self._trajectory.append(assistant)
        except Exception:
            self._log.exception("could not append turn %s to the trajectory log", turn.turn_id)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _copy_baseline(baseline: SpeakerBaseline) -> SpeakerBaseline | None:
    """A deep copy of ``baseline`` with fresh locks (locks cannot be copied); None if it cannot be copied."""
    memo: dict[int, Any] = {}
    for value in getattr(baseline, "__dict__", {}).values():
        if isinstance(value, _LOCK_TYPES):
            memo[id(value)] = threading.RLock() if isinstance(value, _LOCK_TYPES[1]) else threading.Lock()
    try:
        return copy.deepcopy(baseline, memo)
    except Exception:
        return None


def _consent_default(trajectory: TrajectoryLike | None) -> bool:
    return bool(getattr(trajectory, "consent_default", True))


def _wav_bytes(audio: np.ndarray) -> bytes:
    """16 kHz mono float32 → a 16-bit PCM WAV file's bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(proto.float32_to_pcm16(audio))
    return buf.getvalue()


def _synthesize_all(tts: TTS, text: str, prosody: Prosody | None) -> bytes:
    return b"".join(tts.synthesize(text, prosody))


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, e.g. from the turn's TaskGroup."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _new_turn_id() -> str:
    return uuid.uuid4().hex[:16]
