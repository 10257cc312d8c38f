"""What the dialogue engine streams back for one reply, and the prosody a policy asks TTS for.

These are plain dataclasses so that ``voice/`` can consume a reply without importing LangGraph.
Order for one reply: one :class:`PolicyChosen`, then :class:`TextDelta` pieces, then one :class:`ReplyDone`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prosody:
    """How a reply should sound. Maps onto Piper's synthesis settings.

    length_scale > 1 speaks slower (calmer), < 1 faster; noise_scale/noise_w control variation;
    volume scales the output amplitude (1.0 = unchanged).
    """

    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w: float = 0.8
    volume: float = 1.0


@dataclass(frozen=True)
class PolicyChosen:
    policy: str
    prosody: Prosody = field(default_factory=Prosody)
    follow_up: bool = False


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReplyDone:
    text: str
    policy: str
    timings_ms: dict[str, float] = field(default_factory=dict)


ReplyEvent = PolicyChosen | TextDelta | ReplyDone
