"""One websocket connection: the voice loop of one conversation.

A :class:`Session` owns exactly three kinds of task, and cancels every one it starts:

- the **reader** parses client frames (:mod:`voice.protocol`), feeds audio through the resampler and the
  sans-I/O :class:`~voice.turns.TurnDetector`, and starts, interrupts or refuses turns;
- the **writer** drains the :class:`Outbound` queue onto the socket (JSON text frames and binary PCM);
- one **turn task** at a time, running :meth:`voice.pipeline.TurnPipeline.run` (perceive → reply stream →
  sentences → TTS → paced audio out → ``assistant.done``).

:meth:`Session.run` waits on reader and writer with ``asyncio.wait(FIRST_COMPLETED)`` and cancels the rest.

Barge-in: speech lasting ``barge_in_ms`` while a reply is being spoken, or a new turn (audio or typed) while
one is in progress, cancels the turn task; its audio still queued is dropped, and the pipeline then sends
``assistant.interrupted`` with what was heard (:mod:`voice.playback`), tells the dialogue engine and logs the
turn as interrupted (:mod:`voice.records`). A session whose ``consent`` (``session.start``, or the log's
``consent_default``) is false writes no record at all.

Speculative turns: at a pause (``speculative_pause_ms`` of silence, :class:`~voice.turns.SpeechPaused`) the
session starts the turn at once, as a speculative :class:`~voice.pipeline.Turn` whose output the pipeline
holds. When the VAD then ends the turn without speech in between, the turn is confirmed and what it held
goes out at once; when speech resumes (:class:`~voice.turns.SpeechResumed`), or another turn arrives, it
is cancelled and discarded unheard. A reply is thus never sent to a turn the user had not finished.

Stopping (:meth:`Session.drain`, on the server's SIGTERM): the turn in progress may finish within the
server's deadline; one still running then is cut as by barge-in; what is queued is sent and the
connection closes with 1001.

Every bad input becomes an ``error`` event and the connection stays open; a failing turn (unusable audio,
a model error) becomes an ``error`` event too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
from websockets.exceptions import ConnectionClosed

from voice import protocol as proto
from voice.metrics import VoiceMetrics
from voice.outbound import CLOSE, Outbound
from voice.pipeline import Turn, TurnPipeline
from voice.protocol import ErrorCode, ProtocolError
from voice.records import TurnRecorder
from voice.resample import StreamingResampler
from voice.turns import (
    SAMPLE_RATE,
    BargeIn,
    SpeechPaused,
    SpeechResumed,
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
    from voice.services import ServicesLike
    from voice.vad import SileroVAD

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_SAMPLE_RATE = 22_050
# After a drain queued its close: how long the writer may take to send what is left before the server closes.
_DRAIN_FLUSH_S = 2.0
# Frames larger than this many VAD chunks are run through the VAD in a worker thread, not on the loop.
_INLINE_VAD_CHUNKS = 16


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
        metrics: VoiceMetrics | None = None,
    ) -> None:
        self._ws = ws
        self._metrics = metrics if metrics is not None else VoiceMetrics()
        self._perceiver = services.perceiver
        self._dialogue = services.dialogue
        self._tts = services.tts if settings.tts_enabled else None
        self._trajectory = services.trajectory
        self._settings = settings
        self._vad = vad
        self._playback_lead_s = playback_lead_s
        self._out = Outbound()
        self._close_code = 1000  # 1001 once the server drains the session
        self._ended = asyncio.Event()
        self.session_id: str | None = None
        self.consent = True  # trajectory-log consent in effect, set by session.start
        self._pipeline: TurnPipeline | None = None  # set by session.start
        self._resampler: StreamingResampler | None = None
        self._detector: TurnDetector | None = None
        self._turn: Turn | None = None
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
            if self.session_id is not None and hasattr(self._dialogue, "end_session"):
                self._dialogue.end_session(self.session_id)  # its history may leave memory once stored
            await asyncio.gather(reader, writer, return_exceptions=True)
            await self._ws.close(self._close_code)
            self._ended.set()
            self._log.info("session closed")

    async def drain(self, timeout_s: float) -> None:
        """The server is stopping: let the turn in progress finish within ``timeout_s``, cut it if it has not
        (as barge-in does: the history keeps what was heard), then send what is queued and close with 1001."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while (turn := self._turn) is not None and turn.task is not None and not turn.task.done():
                    await asyncio.wait([turn.task])  # a newer turn may take its place: loop
        await self._interrupt_turn()
        self._close_code = 1001
        self._out.close()  # the writer sends what is queued and stops; run() then closes the socket
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), _DRAIN_FLUSH_S)

    async def _write_loop(self) -> None:
        """Drain the outbound queue onto the socket until the close sentinel. Cancellation-safe (drops what
        is left). Once the socket has closed, everything still queued is dropped: the reader notices the
        close and ends the session, so the turn in progress is still interrupted and logged."""
        closed = False
        queue = self._out.queue
        while True:
            item = await queue.get()
            try:
                if item is CLOSE:
                    return
                payload, turn_id = item
                if closed or (isinstance(payload, bytes) and self._out.dropped(turn_id)):
                    continue
                try:
                    await self._ws.send(payload)
                except ConnectionClosed:
                    self._log.info("connection closed while sending; dropping what is queued")
                    closed = True
            finally:
                queue.task_done()

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
        self._out.close()
        await self._out.queue.join()

    def _send_error(self, code: str, message: str) -> None:
        self._metrics.error(code)
        self._out.send(proto.error_event(code, message))

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
            await self._start_turn(Turn.typed(msg.text))
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
        self._log = logging.LoggerAdapter(log, {"session_id": session_id})
        recorder = TurnRecorder(self._trajectory, self._log, outlet=self._out)
        self.consent = msg.consent if msg.consent is not None else recorder.consent_default
        self._pipeline = TurnPipeline(
            session_id,
            perceiver=self._perceiver,
            dialogue=self._dialogue,
            tts=self._tts,
            baseline=baseline,
            recorder=recorder,
            consent=self.consent,
            outlet=self._out,
            on_speaking=self._on_speaking,
            first_clause_chars=self._settings.first_clause_chars,
            playback_lead_s=self._playback_lead_s,
            logger=self._log,
            metrics=self._metrics,
            stream_reply=self._settings.stream_reply,
        )
        # Designing the filter for an odd rate takes a while: not on the event loop.
        self._resampler = await asyncio.to_thread(StreamingResampler, msg.sample_rate, SAMPLE_RATE)
        turn_settings = TurnSettings.from_voice_settings(self._settings)
        self._detector = TurnDetector(self._vad.new_stream(), turn_settings)
        self._log.info(
            "session %s started (resumed=%s, input %d Hz, consent=%s)",
            session_id,
            resumed,
            msg.sample_rate,
            self.consent,
        )
        self._out.send(
            proto.session_started_event(session_id, resumed, self.output_sample_rate, self.consent)
        )

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
                self._out.send(proto.speech_started_event())
            elif isinstance(event, SpeechStopped):
                self._out.send(proto.speech_stopped_event())
            elif isinstance(event, BargeIn):
                turn = self._turn
                if turn is not None and turn.reply is not None:
                    self._log.info("barge-in during turn %s", turn.turn_id)
                    await self._interrupt_turn()
            elif isinstance(event, SpeechPaused):
                t_end = self._wall_time(event.t_end)
                turn = Turn.speculative(event.audio, t_end - (event.t_end - event.t_start), t_end)
                self._log.debug("pause: turn %s begins speculatively", turn.turn_id)
                await self._start_turn(turn)
            elif isinstance(event, SpeechResumed):
                self._discard_speculative()
            elif isinstance(event, TurnEnded):
                if event.reason != "flush":
                    self._vad_turn_since_flush = True
                # The speech window: ends when its last audio arrived, lasts as long as its audio (also
                # right when a client streams a file faster than real time).
                t_end = self._wall_time(event.t_end)
                t_start = t_end - (event.t_end - event.t_start)
                pending = self._turn
                if event.paused and pending is not None and pending.pending and pending.closing is None:
                    self._log.info("turn %s ended (%s)", pending.turn_id, event.reason)
                    assert self._pipeline is not None
                    self._pipeline.confirm(pending, t_end)
                    continue
                self._discard_speculative()
                turn = Turn.spoken(event.audio, t_start, t_end)
                self._log.info("turn %s ended (%s, %.2f s)", turn.turn_id, event.reason, event.duration_s)
                await self._start_turn(turn)

    # ---------------------------------------------------------------------------------------------- turns

    def _on_speaking(self, turn: Turn, speaking: bool) -> None:
        """The pipeline's reply for ``turn`` started (barge-in detection on) or ended by itself (off, unless
        a newer turn has taken over)."""
        if self._detector is None:
            return
        if speaking:
            self._detector.assistant_speaking = True
        elif self._turn is turn:
            self._detector.assistant_speaking = False

    async def _start_turn(self, turn: Turn) -> None:
        """Interrupt the turn in progress (the newest turn wins), then run ``turn`` in its own task."""
        assert self._pipeline is not None
        await self._interrupt_turn()
        turn.task = asyncio.create_task(self._pipeline.run(turn), name=f"voice-turn-{turn.turn_id}")
        self._turn = turn

    def _discard_speculative(self) -> None:
        """Drop the speculative turn in progress, if any, in the background (a later turn waits for it)."""
        turn = self._turn
        if turn is not None and turn.pending and turn.closing is None:
            closing = self._close_turn(turn, False)
            turn.closing = asyncio.create_task(closing, name=f"voice-drop-{turn.turn_id}")

    async def _interrupt_turn(self, *, notify: bool = True) -> None:
        """Cancel the turn in progress, if any, and wait for it to unwind. If its reply had begun, the
        pipeline sends ``assistant.interrupted`` (when ``notify``), tells the dialogue engine and logs it.

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

    async def _close_turn(self, turn: Turn, notify: bool) -> None:
        assert self._pipeline is not None
        pending = turn.pending  # speculative and never confirmed: dropped unheard
        if turn.task is None or (turn.task.done() and not pending):
            return
        if turn.finished:  # nothing left to interrupt: let its record be written once, as not interrupted
            await asyncio.wait([turn.task])
            return
        now = time.monotonic()
        turn.cancelled = True
        self._out.drop_audio(turn.turn_id)
        turn.task.cancel()
        await asyncio.wait([turn.task])
        if pending:
            await self._pipeline.discard(turn)
            return
        if self._detector is not None:
            self._detector.assistant_speaking = False
        await self._pipeline.interrupted(turn, now, notify=notify)
