"""EmpatheticDialogues' 32 speaker emotions on the product's six labels and on valence/arousal.

The mapping is a modelling choice, documented in ``docs/dialogue.md`` ("The reply model") and used by the
reply model and the text-emotion model (``docs/perception.md``, "What the words say"): each ED emotion
goes to the label whose reply it calls for, and carries a valence/arousal pair in [-1, 1] placed after
Russell's circumplex (negative-aroused emotions upper left, calm positive ones lower right). Emotions with
no clear place among the six (anticipating, prepared, surprised, nostalgic, sentimental, faithful,
trusting) map to ``neutral`` with their own valence/arousal, so the policy still sees how they feel.
"""

from __future__ import annotations

# ED emotion → (label, valence, arousal)
ED_EMOTIONS: dict[str, tuple[str, float, float]] = {
    "afraid": ("fear", -0.6, 0.6),
    "angry": ("angry", -0.6, 0.7),
    "annoyed": ("angry", -0.4, 0.4),
    "anticipating": ("neutral", 0.3, 0.4),
    "anxious": ("fear", -0.5, 0.5),
    "apprehensive": ("fear", -0.4, 0.3),
    "ashamed": ("sad", -0.5, 0.1),
    "caring": ("happy", 0.5, 0.1),
    "confident": ("happy", 0.5, 0.3),
    "content": ("happy", 0.6, -0.3),
    "devastated": ("sad", -0.8, 0.2),
    "disappointed": ("sad", -0.5, -0.2),
    "disgusted": ("disgust", -0.6, 0.3),
    "embarrassed": ("sad", -0.4, 0.3),
    "excited": ("happy", 0.7, 0.7),
    "faithful": ("neutral", 0.3, -0.1),
    "furious": ("angry", -0.8, 0.9),
    "grateful": ("happy", 0.7, 0.1),
    "guilty": ("sad", -0.5, 0.1),
    "hopeful": ("happy", 0.5, 0.2),
    "impressed": ("happy", 0.5, 0.4),
    "jealous": ("angry", -0.4, 0.4),
    "joyful": ("happy", 0.8, 0.5),
    "lonely": ("sad", -0.6, -0.4),
    "nostalgic": ("neutral", 0.1, -0.3),
    "prepared": ("neutral", 0.3, 0.0),
    "proud": ("happy", 0.7, 0.4),
    "sad": ("sad", -0.7, -0.3),
    "sentimental": ("neutral", 0.2, -0.2),
    "surprised": ("neutral", 0.2, 0.7),
    "terrified": ("fear", -0.8, 0.8),
    "trusting": ("neutral", 0.4, -0.1),
}


def map_emotion(name: str) -> tuple[str, float, float] | None:
    """``(label, valence, arousal)`` of an ED emotion, or ``None`` for a name that is not one of the 32."""
    return ED_EMOTIONS.get(name.strip().lower())


def is_validation(conv_id: str, share: float = 0.05) -> bool:
    """Whether an ED conversation belongs to the validation split (a stable hash of ``conv_id``, by
    conversation, never by turn); the reply model and the text-emotion model hold out the same ones."""
    import hashlib

    digest = hashlib.sha1(conv_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share
