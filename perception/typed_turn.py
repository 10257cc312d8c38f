"""Perception of a typed turn: what every perceiver's :meth:`~perception.base.Perceiver.perceive_text` gives.

There is no audio, so there are no acoustic cues and no claims about the voice. With the text-emotion model
(:mod:`perception.text_emotion`) the words are read by it: its scores, valence and arousal, the words that
carried them quoted. Without it, the words are matched against the emotion lexicon
(:func:`perception.reasoning.lexical_hits`), the scores lean neutral
(:func:`perception.reasoning.lexicon_scores`: words alone are weak evidence of how someone feels),
valence and arousal come from the label prototypes alone, and the reasoning quotes the words it found.
``timings_ms``: ``asr`` and ``encode`` 0 (nothing was heard), ``reason`` the time the rest took.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from perception.estimator import valence_arousal
from perception.reasoning import build_text_reasoning, lexical_hits, lexicon_scores, text_model_sentence
from perception.types import Emotion, Perception

if TYPE_CHECKING:
    from perception.text_emotion import TextEmotionModel


def perceive_typed(
    text: str,
    model_id: str,
    text_model: TextEmotionModel | None = None,
    context: Sequence[str] = (),
) -> Perception:
    """The perception of typed ``text``, written as by the perceiver ``model_id``: the text model's reading
    (after the conversation's earlier user turns ``context``, oldest first) when there is one, else the
    emotion lexicon's (the text alone)."""
    start = time.perf_counter()
    if text_model is not None and text.strip():
        reading = text_model.read(text, context)
        label = reading.label
        sentence, evidence = text_model_sentence(label, reading.scores[label], reading.words)
        return Perception(
            transcript=text,
            emotion=Emotion(
                label=label, scores=reading.scores, valence=reading.valence, arousal=reading.arousal
            ),
            reasoning=sentence,
            evidence=evidence,
            model=model_id,
            timings_ms={"asr": 0.0, "encode": 0.0, "text": round((time.perf_counter() - start) * 1000, 1)},
        )
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
