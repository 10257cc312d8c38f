"""Reasoning cites only measured cues and verbatim quotes; grounding catches claims that do not hold."""

from __future__ import annotations

import re

from perception.grounding import verify
from perception.reasoning import build_reasoning, build_text_reasoning, lexical_hits, lexicon_scores
from perception.types import LABELS, Emotion, Evidence, Perception

SCORES = {"angry": 0.7, "disgust": 0.05, "fear": 0.05, "happy": 0.05, "neutral": 0.1, "sad": 0.05}


def perception_with(evidence: list[Evidence], transcript: str = "") -> Perception:
    return Perception(
        transcript=transcript,
        emotion=Emotion(label="angry", scores=SCORES, valence=-0.5, arousal=0.6),
        reasoning="",
        evidence=evidence,
        model="test@0",
    )


def test_reasoning_cites_only_measured_cues_and_verbatim_quotes() -> None:
    cues = {"pitch_mean": 1.8, "loudness_mean": 2.3, "hnr": -0.2, "speaking_rate": -1.1}
    transcript = "I HATE waiting, honestly. Thanks for nothing."
    reasoning = build_reasoning("angry", SCORES, cues, transcript)
    acoustic = [e for e in reasoning.evidence if e.kind == "acoustic"]
    lexical = [e for e in reasoning.evidence if e.kind == "lexical"]
    assert {e.cue for e in acoustic} == {"pitch_mean", "loudness_mean", "speaking_rate"}  # |z| >= 1 only
    assert all(e.value == cues[e.cue] for e in acoustic)
    assert [e.quote for e in lexical] == ["HATE", "Thanks"]
    assert all(e.quote in transcript for e in lexical)
    # every sentence is backed by evidence, and every cue named in the text was measured
    assert reasoning.sentences and all(items for _, items in reasoning.sentences)
    named = set(re.findall(r"\(([a-z_]+) z=", reasoning.text))
    assert named <= set(cues)
    assert "raised pitch" in reasoning.text and "slower speech" in reasoning.text
    assert verify(perception_with(reasoning.evidence, transcript), transcript, cues) == (5, 5)


def test_no_standout_cue_still_backed_by_evidence() -> None:
    cues = {"pitch_mean": 0.3, "loudness_mean": -0.6, "jitter": 0.1}
    reasoning = build_reasoning("neutral", SCORES, cues, "It is eleven o'clock.")
    assert len(reasoning.sentences) == 1
    _, items = reasoning.sentences[0]
    assert [e.cue for e in items] == ["loudness_mean", "pitch_mean"]
    assert verify(perception_with(items), "", cues) == (2, 2)


def test_grounding_catches_wrong_claims() -> None:
    cues = {"pitch_mean": 1.8, "loudness_mean": -1.5}
    transcript = "we are fine"
    evidence = [
        Evidence(kind="acoustic", cue="pitch_mean", value=1.8, claim="raised pitch"),  # ok
        Evidence(kind="acoustic", cue="loudness_mean", value=-1.5, claim="louder voice"),  # wrong direction
        Evidence(kind="acoustic", cue="pitch_mean", value=2.5, claim="raised pitch"),  # value not measured
        Evidence(kind="acoustic", cue="jitter", value=1.2, claim="more jitter"),  # cue not measured
        Evidence(kind="lexical", quote="fine", claim="calm word"),  # ok
        Evidence(kind="lexical", quote="furious", claim="anger word"),  # not said
    ]
    assert verify(perception_with(evidence, transcript), transcript, cues) == (6, 2)


def test_small_z_cannot_back_a_directional_claim() -> None:
    cues = {"pitch_mean": 0.4}
    evidence = [Evidence(kind="acoustic", cue="pitch_mean", value=0.4, claim="higher pitch")]
    assert verify(perception_with(evidence), "", cues) == (1, 0)


def test_lexicon_negation_stops_at_punctuation() -> None:
    hits = lexical_hits("I'm not happy. Thanks anyway")
    assert [(h.quote, h.negated) for h in hits] == [("happy", True), ("Thanks", False)]


def test_typed_turn_is_neutral_leaning_distribution() -> None:
    scores = lexicon_scores(lexical_hits("thanks, that's great, I love it"))
    assert set(scores) == set(LABELS)
    assert abs(sum(scores.values()) - 1) < 1e-6
    assert max(scores, key=scores.get) == "happy"
    weak = lexicon_scores(lexical_hits("thanks"))
    assert max(weak, key=weak.get) == "neutral"
    text = build_text_reasoning("neutral", lexicon_scores([]), "ok")
    assert "no audio" in text.text and text.evidence == []
