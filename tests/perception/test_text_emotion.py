"""The words' emotion: the ED mapping, the text model's heads and occlusion, fusion with the voice, and the
shipped model on real sentences (slow: it loads all-MiniLM-L6-v2)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.ed_emotions import ED_EMOTIONS, is_validation, map_emotion
from perception.fusion import fuse
from perception.text_emotion import TextEmotionModel, TextReading
from perception.types import LABELS

NEUTRAL_VOICE = {"angry": 0.05, "disgust": 0.05, "fear": 0.05, "happy": 0.05, "neutral": 0.75, "sad": 0.05}


def test_the_mapping_covers_the_32_emotions_onto_the_six_labels() -> None:
    assert len(ED_EMOTIONS) == 32
    assert {label for label, _, _ in ED_EMOTIONS.values()} == set(LABELS)
    for _label, valence, arousal in ED_EMOTIONS.values():
        assert -1 <= valence <= 1 and -1 <= arousal <= 1
    assert map_emotion("Devastated")[0] == "sad" and map_emotion("devastated")[1] < 0
    assert map_emotion("joyful")[1] > 0 and map_emotion("nope") is None
    assert is_validation("hit:1_conv:2") == is_validation("hit:1_conv:2")  # stable


class _KeywordEmbedder:
    """Deterministic 384-d vectors: dimension 0 lights up for "awful", dimension 1 for "lovely"."""

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        for i, text in enumerate(texts):
            out[i, 0] = "awful" in text
            out[i, 1] = "lovely" in text
            out[i, 2] = 1.0
        return out


def _keyword_model() -> TextEmotionModel:
    coef = np.zeros((6, 384), np.float32)
    coef[LABELS.index("sad"), 0] = 6.0
    coef[LABELS.index("happy"), 1] = 6.0
    bias = np.zeros(6, np.float32)
    bias[LABELS.index("neutral")] = 2.0
    fine = np.zeros((3, 384), np.float32)  # three fine emotions: devastated, calm, joyful
    fine[0, 0], fine[2, 1] = 8.0, 8.0
    fine_bias = np.array([0.0, 3.0, 0.0], np.float32)
    fine_va = np.array([[-0.8, 0.2], [0.0, 0.0], [0.8, 0.5]], np.float32)
    return TextEmotionModel(list(LABELS), coef, bias, fine, fine_bias, fine_va, _KeywordEmbedder())


def test_the_heads_read_the_embedding_and_quote_the_word_that_carried_it(tmp_path) -> None:
    model = _keyword_model()
    sad = model.read("What an awful day it was.")
    assert sad.label == "sad" and sad.valence < -0.5 and sad.words == ["awful"]
    assert abs(sum(sad.scores.values()) - 1) < 1e-6 and set(sad.scores) == set(LABELS)
    plain = model.read("The meeting is at three.")
    assert plain.label == "neutral" and plain.words == [] and abs(plain.valence) < 0.01
    model.save(tmp_path / "m.npz")
    again = TextEmotionModel.load(tmp_path / "m.npz", embedder=_KeywordEmbedder())
    assert again.read("a lovely walk").label == "happy"


def test_fusion_leaves_neutral_words_to_the_voice_and_lets_emotional_words_count() -> None:
    neutral_words = TextReading({**{k: 0.02 for k in LABELS}, "neutral": 0.9}, 0.0, 0.0, [])
    fused = fuse(NEUTRAL_VOICE, 0.0, -0.1, neutral_words, 0.3)
    assert fused.text_share == pytest.approx(0.03, abs=1e-3)
    assert max(fused.scores, key=fused.scores.get) == "neutral"
    sad_words = TextReading({**{k: 0.0 for k in LABELS}, "sad": 1.0}, -0.8, -0.2, ["exhausted"])
    fused = fuse(NEUTRAL_VOICE, 0.0, 0.0, sad_words, 0.3)
    assert fused.text_share == pytest.approx(0.3)
    assert fused.scores["sad"] == pytest.approx(0.7 * 0.05 + 0.3, abs=1e-3)
    assert fused.valence == pytest.approx(-0.24) and fused.arousal == pytest.approx(-0.03)
    assert abs(sum(fused.scores.values()) - 1) < 1e-6
    assert fuse(NEUTRAL_VOICE, 0.0, 0.0, sad_words, 0.0).scores == NEUTRAL_VOICE


@pytest.mark.slow
def test_the_shipped_model_reads_a_sad_typed_turn_as_negative() -> None:
    from perception.typed_turn import perceive_typed

    model = TextEmotionModel.load()
    perception = perceive_typed("I had a really rough day at work and I feel exhausted.", "m@1", model)
    assert perception.emotion.valence < 0 and perception.emotion.label != "happy"
    assert perception.evidence and all(e.kind == "lexical" for e in perception.evidence)
    assert all(e.quote in perception.transcript for e in perception.evidence)
    assert "no audio" in perception.reasoning
    happy = model.read("I just got the job I always wanted, I am so excited!")
    assert happy.label == "happy" and happy.valence > 0
