"""Speech in, a :class:`Perception` out: transcript, emotion with probabilities, valence/arousal,
and reasoning that cites only measured cues and quoted words."""

from perception.types import LABELS, Emotion, Evidence, Perception

__all__ = ["LABELS", "Emotion", "Evidence", "Perception"]
