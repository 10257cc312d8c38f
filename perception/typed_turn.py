"""Perception of a typed turn: what every perceiver's :meth:`~perception.base.Perceiver.perceive_text` gives.

There is no audio, so there are no acoustic cues and no claims about the voice: the words are matched
against the emotion lexicon (:func:`perception.reasoning.lexical_hits`), the scores lean neutral
(:func:`perception.reasoning.lexicon_scores`: words alone are weak evidence of how someone feels), valence
and arousal come from the label prototypes alone, and the reasoning quotes the words it found.
``timings_ms``: ``asr`` and ``encode`` 0 (nothing was heard), ``reason`` the time the rest took.
"""

from __future__ import annotations

import time

from perception.estimator import valence_arousal
from perception.reasoning import build_text_reasoning, lexical_hits, lexicon_scores
from perception.types import Emotion, Perception


def perceive_typed(text: str, model_id: str) -> Perception:
    """The lexical perception of ``text``, written as by the perceiver ``model_id``."""
    start = time.perf_counter()
    scores = lexicon_scores(lexical_hits(text))
    label = max(scores, key=lambda k: scores[k])
    valence, arousal = valence_arousal(scores)
    reasoning = build_text_reasoning(label, scores, text)
    return Perception(
        transcript=text,
        emotion=Emotion(label=label, scores=scores, valence=valence, arousal=arousal),
        reasoning=reasoning.text,
        evidence=reasoning.evidence,
        model=model_id,
        timings_ms={"asr": 0.0, "encode": 0.0, "reason": round((time.perf_counter() - start) * 1000, 1)},
    )
