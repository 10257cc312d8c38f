"""The trajectory records of a conversation: the :class:`TurnRecord` model, its export columns, and the two
records (user, assistant) built for every turn that reached the reply.

Building is pure: :func:`user_record` and :func:`assistant_record` turn a perception, a reply's outcome and
its times into rows, and :func:`wav_bytes` encodes a user turn's 16 kHz audio as WAV for ``audio_ref``.
:class:`TurnRecorder` hands them to the trajectory log the session was given (``append``,
``store_audio``), honouring the log's ``keep_audio``; a failing log is logged, never raised. Through the
log's :class:`RecordBuffer` the records of turns that end while the log is unreachable wait in memory
(bounded) and are written in order when it is back; the client gets a ``warning`` event, not a failed turn.

Times ``t_start``/``t_end`` are Unix epoch seconds. Schema versions: 1 = the fields below without
``audio_ref``; 2 adds ``audio_ref`` (records of version 1 still load, with ``audio_ref`` empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import wave
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from perception.types import Perception
from voice.protocol import WarningCode, float32_to_pcm16, warning_event
from voice.turns import SAMPLE_RATE

if TYPE_CHECKING:
    from voice.services import TrajectoryLike

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# Columns of an export row, in order (docs/contracts.md).
EXPORT_COLUMNS: tuple[str, ...] = (
    "session_id",
    "turn_id",
    "speaker",
    "t_start",
    "t_end",
    "transcript",
    "label",
    "scores",
    "valence",
    "arousal",
    "reasoning",
    "evidence",
    "policy",
    "model",
    "interrupted",
    "latency_ms",
    "audio_ref",
    "schema_version",
)


class TurnRecord(BaseModel):
    session_id: str
    turn_id: str
    speaker: Literal["user", "assistant"]
    t_start: float
    t_end: float
    transcript: str = ""
    label: str | None = None
    scores: dict[str, float] | None = None
    valence: float | None = None
    arousal: float | None = None
    reasoning: str | None = None
    evidence: list[dict[str, Any]] | None = None
    policy: str | None = None
    model: str | None = None
    interrupted: bool = False
    latency_ms: dict[str, float] = Field(default_factory=dict)
    # Key of the user turn's WAV audio, when audio retention is on (``emo-agent export --audio-dir``).
    audio_ref: str | None = None
    schema_version: int = SCHEMA_VERSION

    def row(self) -> dict[str, Any]:
        """The export row: every column of :data:`EXPORT_COLUMNS`."""
        data = self.model_dump()
        return {name: data.get(name) for name in EXPORT_COLUMNS}


def user_record(
    session_id: str, turn_id: str, perception: Perception, *, t_start: float, t_end: float
) -> TurnRecord:
    """The user's row: the transcript and every perception field, the perceiver's timings as
    ``latency_ms.perception_*``; ``t_start``/``t_end`` span the speech (equal for a typed turn)."""
    p = perception
    return TurnRecord(
        session_id=session_id,
        turn_id=turn_id,
        speaker="user",
        t_start=t_start,
        t_end=t_end,
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


def assistant_record(
    session_id: str,
    turn_id: str,
    heard: str,
    *,
    started: float,
    now: float,
    policy: str | None,
    model: str | None,
    interrupted: bool,
    latency_ms: dict[str, float],
) -> TurnRecord:
    """The assistant's row: the text the user heard, spanning ``started`` (the first reply audio frame, or
    text without speech) to ``now`` (the end of playback or the interruption), never ending before it
    starts. ``latency_ms`` is copied, so the turn may go on timing without touching the row."""
    return TurnRecord(
        session_id=session_id,
        turn_id=turn_id,
        speaker="assistant",
        t_start=started,
        t_end=max(started, now),
        transcript=heard,
        policy=policy,
        model=model,
        interrupted=interrupted,
        latency_ms=dict(latency_ms),
    )


def wav_bytes(audio: np.ndarray) -> bytes:
    """16 kHz mono float32 → a 16-bit PCM WAV file's bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(float32_to_pcm16(audio))
    return buf.getvalue()


class WriteResult(StrEnum):
    """What became of one turn's records."""

    WRITTEN = "written"  # in the log
    BUFFERED = "buffered"  # the log is unreachable: waiting in memory, written in order when it is back
    DROPPED = "dropped"  # not in the log: the buffer was full, or the log refused the records
    SKIPPED = "skipped"  # there is no log


@dataclass
class PendingTurn:
    """One turn's writes, done in order: the kept audio (if any), the user's record, the assistant's.
    ``stage`` counts the writes already done, so a retry never repeats one that succeeded."""

    user: TurnRecord
    assistant: TurnRecord
    wav: bytes | None = None
    stage: int = 0
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        # What the turn holds in memory while it waits: the two records as JSON and the audio.
        self.nbytes = len(self.user.model_dump_json()) + len(self.assistant.model_dump_json())
        self.nbytes += len(self.wav or b"")


class RecordBuffer:
    """Turn records on their way to ``trajectory``, held back (bounded, in order) while it is unreachable.

    One buffer serves every session of a process (the log owns it, see ``agent.trajectory``). A write goes
    straight to the log while nothing waits; when it fails with one of ``retry_on`` (the log is unreachable:
    connection refused, a timeout, Redis loading...), the turn waits in memory and every later turn queues
    behind it (answered at once, without touching the unreachable log), so the log receives turns in the
    order they ended. A background task retries every ``retry_s`` (doubling up to ``max_retry_s``) and
    writes the waiting turns in order once the log answers again. At most ``max_turns`` turns and
    ``max_bytes`` bytes (records as JSON plus kept audio) wait; a turn that does not fit is dropped and
    said so. Each write is given ``write_timeout_s``; a write that timed out might still have reached the
    log, so a retry can, rarely, log a record twice (at least once, never lost while it fits).

    Cancellation: the retry task is owned here and cancelled by :meth:`aclose`, which first tries to
    write what is still waiting once.
    """

    def __init__(
        self,
        trajectory: TrajectoryLike,
        *,
        max_turns: int = 1000,
        max_bytes: int = 64 << 20,
        write_timeout_s: float = 2.0,
        retry_s: float = 0.5,
        max_retry_s: float = 10.0,
        retry_on: tuple[type[BaseException], ...] = (OSError,),
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self.trajectory = trajectory
        self.max_turns = max_turns
        self.max_bytes = max_bytes
        self.write_timeout_s = write_timeout_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self._retry_on = retry_on
        self._log = logger
        self._pending: deque[PendingTurn] = deque()
        self._bytes = 0
        self._lock = asyncio.Lock()
        self._retry_task: asyncio.Task[None] | None = None
        self.dropped = 0  # turns dropped since start

    @property
    def pending(self) -> int:
        """Turns waiting for the log."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    async def write(self, turn: PendingTurn) -> WriteResult:
        """Write ``turn`` now, or queue it behind the turns already waiting. Never raises for a failing
        log."""
        if not self._pending:
            async with self._lock:
                if not self._pending:  # still nothing waiting once it is our turn
                    try:
                        await self._write(turn)
                        return WriteResult.WRITTEN
                    except self._retry_on as exc:
                        self._log.warning("trajectory log unreachable (%s); buffering", _brief(exc))
                    except Exception:
                        self._log.exception("the trajectory log refused turn %s; dropped", turn.user.turn_id)
                        self.dropped += 1
                        return WriteResult.DROPPED
        return self._enqueue(turn)

    async def flush(self) -> bool:
        """Write the waiting turns in order until one fails; True when none is left waiting."""
        written = 0
        async with self._lock:
            while self._pending:
                turn = self._pending[0]
                try:
                    await self._write(turn)
                except self._retry_on:
                    break
                except Exception:
                    self._log.exception("the trajectory log refused turn %s; dropped", turn.user.turn_id)
                    self.dropped += 1
                else:
                    written += 1
                self._pending.popleft()
                self._bytes -= turn.nbytes
        if written:
            self._log.info(
                "trajectory log reachable again: %d buffered turns written, %d waiting", written, self.pending
            )
        return not self._pending

    async def aclose(self) -> None:
        """Stop retrying; try once more to write what waits, and say how many turns could not be."""
        task, self._retry_task = self._retry_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending and not await self.flush():
            self._log.error("%d trajectory turns could not be written before shutdown", self.pending)

    # -------------------------------------------------------------------------------------------- inside

    def _enqueue(self, turn: PendingTurn) -> WriteResult:
        if len(self._pending) >= self.max_turns or self._bytes + turn.nbytes > self.max_bytes:
            self.dropped += 1
            self._log.error(
                "trajectory log unreachable and its buffer full (%d turns, %d bytes): turn %s dropped",
                len(self._pending),
                self._bytes,
                turn.user.turn_id,
            )
            return WriteResult.DROPPED
        self._pending.append(turn)
        self._bytes += turn.nbytes
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(
                self._retry_loop(), name="trajectory-retry"
            )
        return WriteResult.BUFFERED

    async def _retry_loop(self) -> None:
        delay = self.retry_s
        while self._pending:
            await asyncio.sleep(delay)
            if await self.flush():
                return
            delay = min(delay * 2, self.max_retry_s)

    async def _write(self, turn: PendingTurn) -> None:
        async with asyncio.timeout(self.write_timeout_s):
            if turn.stage == 0:
                if turn.wav is not None:
                    user = turn.user
                    key = await self.trajectory.store_audio(user.session_id, user.turn_id, turn.wav)
                    user.audio_ref = key
                turn.stage = 1
            if turn.stage == 1:
                await self.trajectory.append(turn.user)
                turn.stage = 2
            if turn.stage == 2:
                await self.trajectory.append(turn.assistant)
                turn.stage = 3


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class EventOutlet(Protocol):
    """Where a session's events go (its outbound queue)."""

    def send(self, event: dict[str, Any]) -> None: ...


class TurnRecorder:
    """Writes a turn's two records to ``trajectory`` (None: nothing is written). The log's optional
    attributes are read when present: ``consent_default`` (default True), ``keep_audio`` (default False),
    ``dialogue_model`` (the model id on assistant rows, default None) and ``write_buffer`` (a
    :class:`RecordBuffer` the log's writes go through; without one a failing write is logged and lost).

    With ``outlet`` (the session's outbound queue), a turn whose records could not be written now gets a
    ``warning`` event: ``trajectory_buffered`` or ``trajectory_dropped``."""

    def __init__(
        self,
        trajectory: TrajectoryLike | None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
        *,
        outlet: EventOutlet | None = None,
    ) -> None:
        self.trajectory = trajectory
        self._log = logger
        self._outlet = outlet

    @property
    def consent_default(self) -> bool:
        return bool(getattr(self.trajectory, "consent_default", True))

    @property
    def dialogue_model(self) -> str | None:
        return getattr(self.trajectory, "dialogue_model", None)

    async def write(self, user: TurnRecord, assistant: TurnRecord, audio: np.ndarray | None) -> WriteResult:
        """Append ``user`` then ``assistant``; with ``keep_audio`` on, store ``audio`` as WAV first and name
        it in ``user.audio_ref``. Failures are logged (and told to the client), not raised."""
        if self.trajectory is None:
            return WriteResult.SKIPPED
        keep = audio is not None and getattr(self.trajectory, "keep_audio", False)
        turn = PendingTurn(user, assistant, wav_bytes(audio) if keep and audio is not None else None)
        buffer: RecordBuffer | None = getattr(self.trajectory, "write_buffer", None)
        if buffer is not None:
            result = await buffer.write(turn)
        else:
            try:
                await RecordBuffer(self.trajectory, max_turns=0, logger=self._log)._write(turn)
                result = WriteResult.WRITTEN
            except Exception:
                self._log.exception("could not append turn %s to the trajectory log", user.turn_id)
                result = WriteResult.DROPPED
        self._warn(result, buffer)
        return result

    def _warn(self, result: WriteResult, buffer: RecordBuffer | None) -> None:
        if self._outlet is None:
            return
        if result is WriteResult.BUFFERED:
            waiting = buffer.pending if buffer is not None else 1
            self._outlet.send(
                warning_event(
                    WarningCode.TRAJECTORY_BUFFERED,
                    f"the research log is unreachable: this turn waits in the server's memory ({waiting} "
                    "waiting) and is logged when it is back",
                )
            )
        elif result is WriteResult.DROPPED:
            self._outlet.send(
                warning_event(
                    WarningCode.TRAJECTORY_DROPPED,
                    "the research log could not take this turn (unreachable with its buffer full, or it "
                    "refused it): it is not logged",
                )
            )
