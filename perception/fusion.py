"""Voice and words together: the rule that fuses the voice's emotion estimate with the text model's.

The words count as far as they are emotional: the text's weight is ``text_weight`` times its confidence
that the words are not neutral (``1 - p_text(neutral)``). An acted neutral sentence ("It's eleven
o'clock") therefore leaves the judgement to the voice, and "I had a really rough day and I feel
exhausted" said in a flat voice moves it. Scores are mixed linearly; valence takes the same weight (the
words say whether something is good or bad); arousal half of it (how aroused someone is, the voice tells
better). ``text_weight`` (``EMO_PERCEPTION__TEXT_WEIGHT``) was chosen on validation data
(``docs/perception.md``, "What the words say").
"""

from __future__ import annotations

from dataclasses import dataclass

from perception.text_emotion import TextReading


@dataclass(frozen=True)
class Fused:
    scores: dict[str, float]
    valence: float
    arousal: float
    text_share: float  # the weight the words got, in [0, text_weight]


def fuse(
    voice_scores: dict[str, float],
    voice_valence: float,
    voice_arousal: float,
    text: TextReading,
    text_weight: float,
) -> Fused:
    """The fused scores (over the voice's labels, summing to 1) and valence/arousal."""
    emotional = 1.0 - float(text.scores.get("neutral", 0.0))
    w = min(1.0, max(0.0, text_weight)) * min(1.0, max(0.0, emotional))
    mixed = {k: (1 - w) * v + w * float(text.scores.get(k, 0.0)) for k, v in voice_scores.items()}
    total = sum(mixed.values()) or 1.0
    scores = {k: round(v / total, 4) for k, v in mixed.items()}
    top = max(scores, key=lambda k: scores[k])
    scores[top] = round(scores[top] + 1.0 - sum(scores.values()), 4)
    valence = (1 - w) * voice_valence + w * text.valence
    arousal = (1 - w / 2) * voice_arousal + (w / 2) * text.arousal
    clip = lambda x: max(-1.0, min(1.0, float(x)))  # noqa: E731
    return Fused(scores, clip(valence), clip(arousal), round(w, 4))
