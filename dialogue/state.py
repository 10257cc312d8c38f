"""The dialogue graph's state: a narrow input (one user turn) and the fuller state kept per session.

Every field says how updates merge. ``messages`` and ``emotional_history`` accumulate across turns (and are
what the Redis checkpointer keeps for a session); the per-turn fields are overwritten by each new turn.
Values are plain JSON-like data so checkpoints stay readable and portable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph import add_messages

from perception.types import LABELS, Perception


class PerceptionSummary(TypedDict):
    """The part of a :class:`perception.types.Perception` that dialogue decisions use."""

    label: str
    scores: dict[str, float]
    valence: float
    arousal: float


class EmotionTurn(TypedDict, total=False):
    """One user turn in the session's emotional trajectory.

    ``label``/``valence``/``arousal`` are ``None`` for typed turns (no audio, no perception). ``policy`` is
    empty until the policy node has run. ``interrupted`` is set when the user barged in on the reply.
    """

    turn_id: str
    label: str | None
    valence: float | None
    arousal: float | None
    policy: str
    interrupted: bool


def merge_turns(left: Sequence[EmotionTurn] | None, right: Sequence[EmotionTurn] | None) -> list[EmotionTurn]:
    """Reducer for ``emotional_history``: entries are keyed by ``turn_id``.

    An update for a known turn is merged into it field by field (so a node can add the policy to the turn
    recorded earlier); an unknown turn is appended. Order is first-seen order.
    """
    merged: list[EmotionTurn] = [dict(entry) for entry in (left or [])]  # type: ignore[misc]
    index = {entry["turn_id"]: i for i, entry in enumerate(merged)}
    for entry in right or []:
        position = index.get(entry["turn_id"])
        if position is None:
            index[entry["turn_id"]] = len(merged)
            merged.append(dict(entry))  # type: ignore[arg-type]
        else:
            merged[position] = {**merged[position], **entry}  # type: ignore[typeddict-item]
    return merged


def summarize_perception(perception: Perception | dict | None) -> PerceptionSummary | None:
    """Reduce a perception (model or its JSON dict) to what the policy needs; labels outside
    :data:`perception.types.LABELS` become ``"neutral"`` so they never reach a prompt unchecked."""
    if perception is None:
        return None
    if isinstance(perception, dict):
        perception = Perception.model_validate(perception)
    emotion = perception.emotion
    label = emotion.label if emotion.label in LABELS else "neutral"
    return PerceptionSummary(
        label=label,
        scores={k: float(v) for k, v in emotion.scores.items() if k in LABELS},
        valence=float(emotion.valence),
        arousal=float(emotion.arousal),
    )


@dataclass(kw_only=True)
class InputState:
    """What a caller passes for one turn."""

    turn_id: str
    """Unique within the session; also names the turn's messages (``{turn_id}:user`` / ``:assistant``)."""
    user_text: str
    """What the user said (transcript) or typed. Only ever placed in a user message."""
    perception: PerceptionSummary | None = None
    """How the user sounded; ``None`` for typed turns."""


@dataclass(kw_only=True)
class State(InputState):
    """The full per-session state (what the checkpointer stores)."""

    messages: Annotated[list[AnyMessage], add_messages] = field(default_factory=list)
    """The conversation, user and assistant turns, merged by message id (so a reply can be replaced)."""
    emotional_history: Annotated[list[EmotionTurn], merge_turns] = field(default_factory=list)
    """One entry per user turn, in order; see :func:`merge_turns`."""
    policy: str = ""
    """The policy chosen for the current turn (overwritten each turn)."""
    summary: str = ""
    """Running summary of the turns older than the LLM's window (see :mod:`dialogue.memory`)."""
    summary_turns: int = 0
    """How many of the earliest turns :attr:`summary` covers."""
