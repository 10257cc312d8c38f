"""The trajectory records of a conversation: the :class:`TurnRecord` model, its export columns, and the two
records (user, assistant) built for every turn that reached the reply.

Building is pure: :func:`user_record` and :func:`assistant_record` turn a perception, a reply's outcome and
its times into rows, and :func:`wav_bytes` encodes a user turn's 16 kHz audio as WAV for ``audio_ref``.
:class:`TurnRecorder` hands them to the trajectory log the session was given (``append``,
``store_audio``), honouring the log's ``keep_audio``; a failing log is logged, never raised.

Times ``t_start``/``t_end`` are Unix epoch seconds. Schema versions: 1 = the fields below without
``audio_ref``; 2 adds ``audio_ref`` (records of version 1 still load, with ``audio_ref`` empty).
"""

from __future__ import annotations

import io
import logging
import wave
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from perception.types import Perception
from voice.protocol import float32_to_pcm16
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


class TurnRecorder:
    """Writes a turn's two records to ``trajectory`` (None: nothing is written). The log's optional
    attributes are read when present: ``consent_default`` (default True), ``keep_audio`` (default False) and
    ``dialogue_model`` (the model id on assistant rows, default None)."""

    def __init__(
        self,
        trajectory: TrajectoryLike | None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self.trajectory = trajectory
        self._log = logger

    @property
    def consent_default(self) -> bool:
        return bool(getattr(self.trajectory, "consent_default", True))

    @property
    def dialogue_model(self) -> str | None:
        return getattr(self.trajectory, "dialogue_model", None)

    async def write(self, user: TurnRecord, assistant: TurnRecord, audio: np.ndarray | None) -> None:
        """Append ``user`` then ``assistant``; with ``keep_audio`` on, store ``audio`` as WAV first and name
        it in ``user.audio_ref``. Failures are logged, not raised."""
        if self.trajectory is None:
            return
        try:
            if audio is not None and getattr(self.trajectory, "keep_audio", False):
                key = await self.trajectory.store_audio(user.session_id, user.turn_id, wav_bytes(audio))
                user.audio_ref = key
            await self.trajectory.append(user)
            await self.trajectory.append(assistant)
        except Exception:
            self._log.exception("could not append turn %s to the trajectory log", user.turn_id)
