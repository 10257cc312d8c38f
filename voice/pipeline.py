"""The turn pipeline of one conversation: perceive → dialogue reply stream → sentences → TTS → audio out.

:meth:`TurnPipeline.run` is the body of a session's turn task: perceive the turn (worker thread) →
``user.perception`` → stream the dialogue's reply → ``assistant.delta`` events, each complete sentence
(:mod:`voice.sentences`) to TTS (worker thread) → binary PCM frames of at most ~100 ms, paced by
:class:`~voice.playback.Playback` to at most ``playback_lead_s`` ahead of the client → ``assistant.text``
when the text is complete → ``assistant.done`` once the audio has been played. Events and audio go out
through an :class:`Outlet`; the pipeline never touches the socket.

It also ends turns that do not finish: :meth:`TurnPipeline.interrupted` (after the session cancelled the
turn task) and a reply failing after it had begun both send ``assistant.interrupted`` with what was heard,
tell the dialogue engine (``mark_interrupted``) and log the turn as interrupted. Every turn that reached the
reply is logged as two records (:mod:`voice.records`), unless the session has no consent.

A **speculative** turn (:meth:`Turn.speculative`) starts at a pause, before the VAD has confirmed the end
of the user's turn: perception and the reply run, but nothing of the turn reaches the client, the speaker
baseline or the turn's reporting until :meth:`TurnPipeline.confirm`. Events are held in order and sent at
confirmation; reply audio waits there, so the playback clock starts when the client really gets it. A
speculative turn dropped before confirmation (:meth:`TurnPipeline.discard`: the user went on speaking) is
never heard: the dialogue engine forgets it (``forget_turn``) and the speaker baseline is restored.

Every turn is reported once, when it ends (done, interrupted or failed), to the server's
:class:`~voice.metrics.VoiceMetrics`; a turn whose ``user.perception`` was sent also ends with a
``metrics`` event carrying its latencies, after its ``assistant.done``, ``assistant.interrupted`` or error.

Perceptions update the speaker baseline one at a time, each against a private copy that becomes the
baseline only if its turn was not dropped meanwhile (the worker thread cannot be stopped).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from dialogue.events import PolicyChosen, Prosody, ReplyDone, TextDelta
from perception.base import AudioError, Perceiver, SpeakerBaseline
from perception.streams.jobs import PerceptionTimeout
from perception.types import Perception
from voice import protocol as proto
from voice.metrics import TurnOutcome, VoiceMetrics, turn_stages
from voice.playback import pcm_frames
from voice.protocol import ErrorCode
from voice.records import TurnRecorder, assistant_record, user_record
from voice.sentences import SentenceSplitter
from voice.services import DialogueLike
from voice.tts import TTS
from voice.turn_state import Reply, Turn
from voice.turns import SAMPLE_RATE


class Outlet(Protocol):
    """Where a turn's output goes (the session's outbound queue)."""

    def send(self, event: dict[str, Any]) -> None: ...

    def send_audio(self, pcm: bytes, turn_id: str) -> None: ...

    def drop_audio(self, turn_id: str) -> None:
        """Drop ``turn_id``'s audio still queued, and any sent later."""
        ...


class TurnPipeline:
    """Runs the turns of one started session, one at a time (the session owns and cancels the tasks).

    ``on_speaking(turn, True)`` is called when ``turn``'s reply starts, ``on_speaking(turn, False)`` when it
    ends by itself (done or failed); the session decides what that means for barge-in detection.
    """

    def __init__(
        self,
        session_id: str,
        *,
        perceiver: Perceiver,
        dialogue: DialogueLike,
        tts: TTS | None,
        baseline: SpeakerBaseline | None,
        recorder: TurnRecorder,
        consent: bool,
        outlet: Outlet,
        on_speaking: Callable[[Turn, bool], None],
        first_clause_chars: int,
        playback_lead_s: float,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        metrics: VoiceMetrics | None = None,
        stream_reply: bool = True,
    ) -> None:
        self.session_id = session_id
        self._perceiver = perceiver
        self._dialogue = dialogue
        self._tts = tts
        self.baseline = baseline
        self._perceive_lock = threading.Lock()
        self._recorder = recorder
        self.consent = consent
        self._out = outlet
        self._on_speaking = on_speaking
        self._first_clause_chars = first_clause_chars
        self._playback_lead_s = playback_lead_s
        self._log = logger
        self._metrics = metrics if metrics is not None else VoiceMetrics()
        self._stream_reply = stream_reply

    # ------------------------------------------------------------------------------------ the turn task

    async def run(self, turn: Turn) -> None:
        """The turn task. Cancellation-safe: the session interrupts it at any await."""
        try:
            await self._run(turn)
        except asyncio.CancelledError:
            raise
        except Exception as raised:
            exc = _first_leaf(raised)
            await turn.confirmed.wait()  # a speculative turn's failure is the turn's only once confirmed
            if isinstance(exc, PerceptionTimeout):
                self._log.warning("turn %s: %s", turn.turn_id, exc)
                self._send_error(ErrorCode.PERCEPTION_TIMEOUT, str(exc))
            elif isinstance(exc, AudioError):
                self._log.info("turn %s: unusable audio: %s", turn.turn_id, exc)
                self._send_error(ErrorCode.AUDIO_ERROR, str(exc))
            else:
                self._log.error("turn %s failed", turn.turn_id, exc_info=exc)
                self._send_error(ErrorCode.TURN_FAILED, f"{type(exc).__name__}: {exc}")
                reply = turn.reply
                if reply is not None and reply.begun:
                    await self._end_failed_reply(turn, reply)
            self._report(turn, "failed")
        finally:
            self._on_speaking(turn, False)

    async def _run(self, turn: Turn) -> None:
        perception = await asyncio.to_thread(self._perceive, turn)
        turn.mark("perception")
        turn.perception = perception
        self._send(turn, proto.user_perception_event(turn.turn_id, perception))

        turn.reply = reply = Reply(t_start_wall=time.time())
        if not turn.pending:  # a speculative turn starts speaking at its confirmation
            self._on_speaking(turn, True)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:  # both children are owned by (and die with) the turn
            group.create_task(self._generate(turn, perception, sentences))
            group.create_task(self._speak(turn, sentences))
        await turn.confirmed.wait()
        # Let the client finish playing what was sent before declaring the reply done.
        await asyncio.sleep(reply.playback.remaining(time.monotonic()))
        turn.mark("total")
        turn.finished = True
        # Recorded before ``assistant.done``: a client that leaves right after it loses nothing.
        await self._record(turn, reply.final_text or reply.text, interrupted=False)
        self._out.send(proto.assistant_done_event(turn.turn_id))
        self._report(turn, "done")
        self._on_speaking(turn, False)

    def _perceive(self, turn: Turn) -> Perception:
        """Perceive ``turn`` (its audio, or its typed words read after the session's earlier turns) in a
        worker thread against a private copy of the speaker baseline; the copy becomes the baseline only if
        ``turn`` was not dropped meanwhile (the thread cannot be stopped)."""

        def perceive(baseline: SpeakerBaseline | None) -> Perception:
            if turn.audio is None:
                return self._perceiver.perceive_text(turn.text or "", baseline)
            return self._perceiver.perceive(turn.audio, SAMPLE_RATE, baseline)

        with self._perceive_lock:  # perceptions update the baseline one at a time
            live = self.baseline
            private = copy_baseline(live) if live is not None else None
            if private is None:  # no baseline, or one that cannot be copied: updated in place
                return perceive(live)
            perception = perceive(private)
            if not turn.cancelled:
                turn.baseline_before, turn.baseline_after = live, private
                self.baseline = private
            return perception

    def _restore_baseline(self, turn: Turn) -> None:
        """Undo ``turn``'s update of the speaker baseline (once no perception is running)."""
        with self._perceive_lock:
            if turn.baseline_after is not None and self.baseline is turn.baseline_after:
                self.baseline = turn.baseline_before

    async def _generate(
        self, turn: Turn, perception: Perception, sentences: asyncio.Queue[str | None]
    ) -> None:
        """Stream the dialogue reply: deltas out, whole sentences to the speaker, then ``assistant.text``."""
        assert turn.reply is not None
        reply = turn.reply
        splitter = SentenceSplitter(first_clause_chars=self._first_clause_chars if self._stream_reply else 0)
        whole: list[str] = []  # without streaming, the sentences wait for the whole reply
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
                    self._send(turn, proto.assistant_delta_event(turn.turn_id, event.text))
                    for sentence in splitter.push(event.text):
                        if self._stream_reply:
                            turn.mark("first_sentence")
                            await sentences.put(sentence)
                        else:
                            whole.append(sentence)
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
            whole.extend(splitter.push(reply.final_text))
        rest = splitter.finish()
        for sentence in [*whole, rest] if rest else whole:
            turn.mark("first_sentence")
            await sentences.put(sentence)
        await sentences.put(None)
        turn.mark("reply_text")
        text = reply.final_text or reply.text
        self._send(turn, proto.assistant_text_event(turn.turn_id, text, reply.policy))

    async def _speak(self, turn: Turn, sentences: asyncio.Queue[str | None]) -> None:
        """Synthesize sentences in order and send their PCM, paced to at most ``playback_lead_s`` ahead."""
        assert turn.reply is not None
        reply = turn.reply
        playback = reply.playback
        while (sentence := await sentences.get()) is not None:
            if self._tts is None:
                continue
            pcm = await asyncio.to_thread(_synthesize_all, self._tts, sentence, reply.prosody)
            if not pcm:
                continue
            rate = self._tts.sample_rate
            playback.add_sentence(sentence, len(pcm) / 2 / rate)
            await turn.confirmed.wait()  # a speculative turn's audio waits for its confirmation
            for frame in pcm_frames(pcm, rate):
                wait = playback.wait_before_frame(time.monotonic(), self._playback_lead_s)
                if wait > 0:
                    await asyncio.sleep(wait)
                turn.mark("first_audio_byte")
                if reply.first_output_wall is None:
                    reply.first_output_wall = time.time()
                self._out.send_audio(frame, turn.turn_id)
                playback.frame_sent(len(frame), rate)

    # ------------------------------------------------------------------------------- speculative turns

    def confirm(self, turn: Turn, t_end_wall: float) -> None:
        """The speculative ``turn`` stands: the user's turn ended (at ``t_end_wall``) without speaking on.
        Its latencies are re-based to now, what it held is sent in order, and its reply may speak."""
        if not turn.pending:
            return
        now = time.monotonic()
        lead_ms = round((now - turn.t_end_mono) * 1000, 1)
        for stage in turn.marked:
            turn.latency_ms[stage] = round(turn.latency_ms[stage] - lead_ms, 1)
        turn.latency_ms["speculative_lead"] = lead_ms
        turn.t_end_mono, turn.t_end_wall = now, t_end_wall
        held, turn.held = turn.held or [], None
        turn.confirmed.set()
        self._metrics.speculation("confirmed")
        self._log.info("turn %s confirmed (%d held, begun %.0f ms early)", turn.turn_id, len(held), lead_ms)
        for send in held:
            send()
        if turn.reply is not None and turn.task is not None and not turn.task.done():
            self._on_speaking(turn, True)

    async def discard(self, turn: Turn) -> None:
        """The speculative ``turn`` (its task already cancelled) is dropped unheard: nothing it held is sent,
        the dialogue engine forgets it and the speaker baseline is as if it never ran."""
        self._metrics.speculation("discarded")
        self._log.info("speculative turn %s dropped: the user went on", turn.turn_id)
        await asyncio.to_thread(self._restore_baseline, turn)
        forget = getattr(self._dialogue, "forget_turn", None)
        if forget is None:
            self._log.warning("the dialogue engine cannot forget turn %s: its history keeps it", turn.turn_id)
            return
        try:
            await forget(self.session_id, turn.turn_id)
        except Exception:
            self._log.exception("forget_turn failed")

    def _send(self, turn: Turn, event: dict[str, Any]) -> None:
        """Send one of ``turn``'s events now, or hold it until the speculative turn is confirmed."""
        if turn.held is not None:
            turn.held.append(lambda: self._out.send(event))
        else:
            self._out.send(event)

    # ------------------------------------------------------------------------------ turns that stop short

    async def interrupted(self, turn: Turn, now: float, *, notify: bool) -> None:
        """``turn``'s task was cancelled at ``now`` (monotonic). If its reply had begun: send
        ``assistant.interrupted`` with what was heard (when ``notify``), tell the dialogue engine and log
        the turn as interrupted."""
        reply = turn.reply
        if reply is None:
            self._log.info("turn %s cancelled before its reply", turn.turn_id)
            self._report(turn, "interrupted", notify=False)
            return
        heard = reply.heard_text(now, speaking=self._tts is not None)
        self._log.info("turn %s interrupted (%d characters heard)", turn.turn_id, len(heard))
        self._log.debug("turn %s: heard %r", turn.turn_id, heard)
        if notify:
            self._out.send(proto.assistant_interrupted_event(turn.turn_id, heard))
        await self._close_interrupted(turn, heard)
        self._report(turn, "interrupted", notify=notify)

    async def _end_failed_reply(self, turn: Turn, reply: Reply) -> None:
        """A reply that failed after it had begun ends like an interrupted one: the client plays what it
        got, then gets ``assistant.interrupted`` with that text; the dialogue keeps only that text and the
        turn is logged as interrupted."""
        await asyncio.sleep(reply.playback.remaining(time.monotonic()))
        turn.finished = True  # from here on a newer turn waits for this bookkeeping instead of repeating it
        self._out.drop_audio(turn.turn_id)
        heard = reply.heard_text(time.monotonic(), speaking=self._tts is not None)
        self._log.info("turn %s: reply failed (%d characters heard)", turn.turn_id, len(heard))
        self._log.debug("turn %s: heard %r", turn.turn_id, heard)
        self._out.send(proto.assistant_interrupted_event(turn.turn_id, heard))
        await self._close_interrupted(turn, heard)

    async def _close_interrupted(self, turn: Turn, heard: str) -> None:
        """Tell the dialogue engine what was heard of ``turn``'s reply and log the turn as interrupted."""
        try:
            await self._dialogue.mark_interrupted(self.session_id, turn.turn_id, heard)
        except Exception:
            self._log.exception("mark_interrupted failed")
        await self._record(turn, heard, interrupted=True)

    async def _record(self, turn: Turn, heard: str, *, interrupted: bool) -> None:
        """Append the user's and the assistant's record; failures are logged, not raised."""
        if self._recorder.trajectory is None or turn.perception is None or not self.consent:
            return
        reply = turn.reply
        user = user_record(
            self.session_id, turn.turn_id, turn.perception, t_start=turn.t_start_wall, t_end=turn.t_end_wall
        )
        assistant = assistant_record(
            self.session_id,
            turn.turn_id,
            heard,
            started=(reply.first_output_wall or reply.t_start_wall) if reply else turn.t_end_wall,
            now=time.time(),
            policy=reply.policy if reply else None,
            model=self._recorder.dialogue_model,
            interrupted=interrupted,
            latency_ms=turn.latency_ms,
        )
        await self._recorder.write(user, assistant, turn.audio)

    def _report(self, turn: Turn, outcome: TurnOutcome, *, notify: bool = True) -> None:
        """Report ``turn``'s end once: to the server's metrics and, when ``notify`` and the client knows the
        turn (its ``user.perception`` was sent), as a ``metrics`` event with what was measured."""
        if turn.outcome is not None:
            return
        turn.outcome = outcome
        perception_ms = turn.perception.timings_ms if turn.perception is not None else {}
        first_output = "first_audio_byte" if self._tts is not None else "llm_first_token"
        self._metrics.observe_turn(
            outcome, turn_stages(turn.latency_ms, perception_ms), turn.latency_ms.get(first_output)
        )
        if notify and turn.perception is not None:
            self._out.send(proto.metrics_event(turn.turn_id, outcome, turn.latency_ms, perception_ms))

    def _send_error(self, code: str, message: str) -> None:
        self._metrics.error(code)
        self._out.send(proto.error_event(code, message))


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def copy_baseline(baseline: SpeakerBaseline) -> SpeakerBaseline | None:
    """A deep copy of ``baseline`` with fresh locks (locks cannot be copied); None if it cannot be copied."""
    memo: dict[int, Any] = {}
    for value in getattr(baseline, "__dict__", {}).values():
        if isinstance(value, _LOCK_TYPES):
            memo[id(value)] = threading.RLock() if isinstance(value, _LOCK_TYPES[1]) else threading.Lock()
    try:
        return copy.deepcopy(baseline, memo)
    except Exception:
        return None


def _synthesize_all(tts: TTS, text: str, prosody: Prosody | None) -> bytes:
    return b"".join(tts.synthesize(text, prosody))


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, e.g. from the turn's TaskGroup."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
