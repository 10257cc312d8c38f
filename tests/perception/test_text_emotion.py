"""The words' emotion: the ED mapping, the text model's heads and occlusion, reading a turn after the
conversation's earlier ones, fusion with the voice, and the shipped model on real sentences (slow: it loads
all-MiniLM-L6-v2)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.acoustics import CorpusNorms, RunningBaseline
from perception.base import CONTEXT_TURNS, Perceiver, SpeakerBaseline
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


def _keyword_model(context: bool = False) -> TextEmotionModel:
    coef = np.zeros((6, 384), np.float32)
    coef[LABELS.index("sad"), 0] = 6.0
    coef[LABELS.index("happy"), 1] = 6.0
    bias = np.zeros(6, np.float32)
    bias[LABELS.index("neutral")] = 2.0
    fine = np.zeros((3, 384), np.float32)  # three fine emotions: devastated, calm, joyful
    fine[0, 0], fine[2, 1] = 8.0, 8.0
    fine_bias = np.array([0.0, 3.0, 0.0], np.float32)
    fine_va = np.array([[-0.8, 0.2], [0.0, 0.0], [0.8, 0.5]], np.float32)
    return TextEmotionModel(
        list(LABELS), coef, bias, fine, fine_bias, fine_va, _KeywordEmbedder(), 1.0 if context else 0.0, 0.25
    )


class _TypedOnly(Perceiver):
    model_id = "typed@1"

    def __init__(self, text_model: TextEmotionModel) -> None:
        self.text_model = text_model

    def new_baseline(self) -> SpeakerBaseline:
        return RunningBaseline(CorpusNorms({}, {}))

    def perceive(self, audio, sample_rate=16_000, baseline=None):
        raise NotImplementedError


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


def test_earlier_turns_move_an_ambiguous_turn_their_way_and_only_its_own_words_are_quoted(tmp_path) -> None:
    model = _keyword_model(context=True)
    turn = "Yeah, it really was."
    alone = model.read(turn)
    assert alone.label == "neutral"
    after_bad = model.read(turn, ["The funeral was awful."])
    after_good = model.read(turn, ["We had a lovely wedding."])
    assert after_bad.label == "sad" and after_good.label == "happy"
    assert after_bad.valence < alone.valence < after_good.valence
    assert (
        after_bad.scores["sad"] > alone.scores["sad"] and after_good.scores["happy"] > alone.scores["happy"]
    )
    assert after_bad.words == []  # "awful" was said before, not in this turn
    # The latest earlier turn counts most: sad news, then lovely news, reads happy; the reverse sad.
    assert model.read(turn, ["It was awful.", "Then a lovely surprise."]).label == "happy"
    assert model.read(turn, ["A lovely day.", "Then it turned awful."]).label == "sad"
    model.save(tmp_path / "c.npz")
    again = TextEmotionModel.load(tmp_path / "c.npz", embedder=_KeywordEmbedder())
    assert again.read(turn, ["The funeral was awful."]).scores == after_bad.scores
    plain = _keyword_model()  # a model without a context head reads the turn alone
    assert plain.read(turn, ["The funeral was awful."]).scores == plain.read(turn).scores


def test_a_typed_turn_is_read_after_the_conversation_kept_in_its_baseline() -> None:
    perceiver = _TypedOnly(_keyword_model(context=True))
    baseline = perceiver.new_baseline()
    assert perceiver.perceive_text("The funeral was awful.", baseline).emotion.label == "sad"
    assert perceiver.perceive_text("Yeah, it really was.", baseline).emotion.label == "sad"
    assert perceiver.perceive_text("Yeah, it really was.").emotion.label == "neutral"  # no conversation
    for i in range(CONTEXT_TURNS + 2):
        perceiver.perceive_text(f"turn {i}", baseline)
    assert baseline.recent_texts() == [f"turn {i}" for i in range(2, CONTEXT_TURNS + 2)]
    restored = perceiver.new_baseline()
    restored.load_state(baseline.to_state())
    assert restored.recent_texts() == baseline.recent_texts()
    baseline.reset()
    assert baseline.recent_texts() == []


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
    assert model.context_weight > 0  # the shipped model reads a turn with the conversation
    turn = "Yeah, it was."
    alone = model.read(turn)
    after_loss = model.read(turn, ["My grandmother passed away last week."])
    after_win = model.read(turn, ["I won the lottery yesterday!"])
    after_scare = model.read(turn, ["A man followed me home last night."])
    assert after_loss.valence < alone.valence < after_win.valence
    assert after_loss.label == "sad" and after_win.label == "happy"
    assert after_scare.scores["fear"] > 2 * alone.scores["fear"]  # moved towards fear (alone it leans sad)
    assert (
        after_loss.scores["sad"] > alone.scores["sad"] and after_win.scores["happy"] > alone.scores["happy"]
    )
