"""The perception record shared by every part of the product (see docs/contracts.md in the repository).

A :class:`Perception` is what ``emo-agent perceive --json`` prints, what the ``user.perception``
websocket event carries and what the trajectory log stores.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

# Canonical label set, in this order everywhere (model outputs, confusion matrices, exports).
LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad")

# Other corpora's names for the same emotions. Labels outside LABELS and this map are reported and skipped.
LABEL_ALIASES: dict[str, str] = {
    "anger": "angry",
    "ang": "angry",
    "disgusted": "disgust",
    "dis": "disgust",
    "fearful": "fear",
    "fea": "fear",
    "joy": "happy",
    "happiness": "happy",
    "hap": "happy",
    "neu": "neutral",
    "calm": None,  # type: ignore[dict-item]  # RAVDESS "calm" is not neutral: skipped, not guessed
    "sadness": "sad",
    "sad": "sad",
}


def canonical_label(raw: str) -> str | None:
    """Map a corpus label onto :data:`LABELS`; ``None`` when it has no canonical equivalent."""
    key = raw.strip().lower()
    if key in LABELS:
        return key
    return LABEL_ALIASES.get(key)


class Evidence(BaseModel):
    """One checkable citation behind the reasoning.

    ``kind == "acoustic"``: ``cue`` names a measured feature and ``value`` is its measurement relative to
    the reference (z-score against the speaker's running baseline, or against corpus norms when the
    speaker is new). ``kind == "lexical"``: ``quote`` is a verbatim span of the transcript.
    """

    kind: Literal["acoustic", "lexical"]
    claim: str
    cue: str | None = None
    value: float | None = None
    quote: str | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Evidence:
        if self.kind == "acoustic" and (self.cue is None or self.value is None):
            raise ValueError("acoustic evidence needs cue and value")
        if self.kind == "lexical" and not self.quote:
            raise ValueError("lexical evidence needs quote")
        return self


class Emotion(BaseModel):
    label: str
    scores: dict[str, float]
    valence: float = Field(ge=-1.0, le=1.0)
    arousal: float = Field(ge=-1.0, le=1.0)

    @field_validator("scores")
    @classmethod
    def _scores_are_a_distribution(cls, scores: dict[str, float]) -> dict[str, float]:
        total = sum(scores.values())
        if scores and abs(total - 1.0) > 1e-3:
            raise ValueError(f"scores must sum to 1, got {total:.4f}")
        return scores


class Perception(BaseModel):
    transcript: str
    emotion: Emotion
    reasoning: str
    evidence: list[Evidence] = Field(default_factory=list)
    model: str
    timings_ms: dict[str, float] = Field(default_factory=dict)
