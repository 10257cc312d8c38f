"""The per-turn flow every audio perceiver shares (``perception.orchestration``) and the typed-turn
perception every perceiver gives (``Perceiver.perceive_text``), on a scripted estimator with the real
openSMILE analyzer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from perception.acoustics import AcousticAnalyzer, RunningBaseline, zscores
from perception.base import AudioError, Perceiver, SpeakerBaseline
from perception.estimator import ClassicalEstimator, valence_arousal
from perception.orchestration import PerceptionPipeline
from perception.reasoning import build_reasoning
from perception.typed_turn import perceive_typed
from perception.types import LABELS, Perception

TRANSCRIPT = "I am so angry about this"
SCORES = {"angry": 0.6, "disgust": 0.1, "fear": 0.1, "happy": 0.05, "neutral": 0.1, "sad": 0.05}


@dataclass
class Heard:
    transcript: str
    timings_ms: dict[str, float]
    n_samples: int


class ScriptedPerceiver(PerceptionPipeline[Heard]):
    """Fixed transcript and scores; records what the pipeline handed each stage."""

    model_id = "scripted@1"

    def __init__(self, analyzer: AcousticAnalyzer) -> None:
        self.analyzer = analyzer
        self.norms = ClassicalEstimator.load().norms
        self.calls: list[tuple] = []

    def new_baseline(self) -> RunningBaseline:
        return RunningBaseline(self.norms)

    def listen(self, audio: np.ndarray) -> Heard:
        self.calls.append(("listen", audio.shape, audio.dtype))
        return Heard(TRANSCRIPT, {"asr": 1.5, "encode": 2.5, "extra": 3.5}, len(audio))

    def prepare(self, heard, measurement, baseline):
        self.calls.append(("prepare", measurement, baseline))
        return heard

    def estimate(self, heard, measurement) -> dict[str, float]:
        self.calls.append(("estimate", heard.n_samples))
        return dict(SCORES)


@pytest.fixture(scope="module")
def analyzer() -> AcousticAnalyzer:
    return AcousticAnalyzer()


def voice(seconds: float = 1.5, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a wobbling pitch and some noise: enough voice for openSMILE to measure."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 150 + 20 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (0.2 * tone + noise).astype(np.float32)


def test_one_turn_runs_the_stages_in_order_and_judges_cues_before_folding_them_in(analyzer) -> None:
    perceiver = ScriptedPerceiver(analyzer)
    audio = voice()
    baseline = perceiver.new_baseline()
    perception, cue_z = perceiver.perceive_with_cues(audio, baseline=baseline)
    Perception.model_validate(perception.model_dump())

    assert [c[0] for c in perceiver.calls] == ["listen", "prepare", "estimate"]
    assert perceiver.calls[1][2] is baseline  # prepare sees the conversation's baseline
    assert list(perception.timings_ms) == ["asr", "encode", "extra", "acoustics", "estimate", "reason"]
    assert perception.timings_ms["asr"] == 1.5 and perception.timings_ms["extra"] == 3.5
    assert perception.timings_ms["acoustics"] > 0

    cues = analyzer.measure(audio).cues(TRANSCRIPT)
    assert cue_z == zscores(cues, perceiver.new_baseline())  # against the corpus: the baseline was empty
    assert perception.emotion.label == "angry" and perception.emotion.scores == SCORES
    assert (perception.emotion.valence, perception.emotion.arousal) == valence_arousal(SCORES, cue_z)
    expected = build_reasoning("angry", SCORES, cue_z, TRANSCRIPT, reference="typical speech")
    assert perception.reasoning == expected.text and perception.evidence == expected.evidence
    assert perception.model == "scripted@1" and perception.transcript == TRANSCRIPT
    assert baseline.n_turns == 1  # folded in after the judgement


def test_the_reference_becomes_the_speaker_once_the_baseline_has_enough_turns(analyzer, monkeypatch) -> None:
    perceiver = ScriptedPerceiver(analyzer)
    seen: list[str] = []
    default_explain = perceiver.explain
    monkeypatch.setattr(
        perceiver,
        "explain",
        lambda heard, label, scores, cue_z, reference: (
            seen.append(reference) or default_explain(heard, label, scores, cue_z, reference)
        ),
    )
    baseline = perceiver.new_baseline()
    for seed in range(baseline.min_turns + 1):
        perceiver.perceive(voice(seed=seed), baseline=baseline)
    assert seen == ["typical speech"] * baseline.min_turns + ["the speaker's baseline"]
    perceiver.perceive(voice())  # no conversation: a fresh reference every time
    assert seen[-1] == "typical speech"


def test_audio_is_brought_to_mono_16k_and_checked_before_anything_runs(analyzer) -> None:
    perceiver = ScriptedPerceiver(analyzer)
    stereo_48k = np.stack([voice(rate=48_000)] * 2, axis=1)
    perception = perceiver.perceive(stereo_48k, sample_rate=48_000)
    assert perceiver.calls[0][1:] == ((24_000,), np.float32) and perception.emotion.label == "angry"
    perceiver.calls.clear()
    with pytest.raises(AudioError, match="too short"):
        perceiver.perceive(np.full(3000, 0.1, dtype=np.float32))
    with pytest.raises(AudioError, match="silent"):
        perceiver.perceive(np.zeros(16_000, dtype=np.float32))
    assert perceiver.calls == []


def test_a_baseline_of_another_kind_is_refused(analyzer) -> None:
    class OtherBaseline(SpeakerBaseline):
        def reset(self) -> None: ...

    with pytest.raises(TypeError, match="ScriptedPerceiver needs a RunningBaseline, got OtherBaseline"):
        ScriptedPerceiver(analyzer).perceive(voice(), baseline=OtherBaseline())


def test_both_estimators_run_on_the_shared_pipeline() -> None:
    from perception.audiollm.perceiver import AudioLLMPerceiver
    from perception.pipeline import ClassicalPerceiver

    for cls in (ClassicalPerceiver, AudioLLMPerceiver):
        assert issubclass(cls, PerceptionPipeline)
        assert cls.perceive_with_cues is PerceptionPipeline.perceive_with_cues  # the flow is not redone
        assert cls.perceive_text is Perceiver.perceive_text  # typed turns: the shared implementation


class MinimalPerceiver(Perceiver):
    """A backend that implements only the abstract methods."""

    model_id = "minimal@0"

    def new_baseline(self) -> SpeakerBaseline:
        raise NotImplementedError

    def perceive(self, audio, sample_rate=16_000, baseline=None) -> Perception:
        raise NotImplementedError


def test_every_perceiver_answers_typed_turns_from_the_words() -> None:
    perceiver = MinimalPerceiver()
    perception = perceiver.perceive_text("I hate this, I am furious, it is ridiculous")
    Perception.model_validate(perception.model_dump())
    assert perception.emotion.label == "angry" and perception.model == "minimal@0"
    assert set(perception.emotion.scores) == set(LABELS)
    assert sum(perception.emotion.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert {e.quote for e in perception.evidence} >= {"hate", "furious"}
    assert all(e.kind == "lexical" for e in perception.evidence) and "no audio" in perception.reasoning
    assert set(perception.timings_ms) == {"asr", "encode", "reason"}
    assert perception.timings_ms["asr"] == perception.timings_ms["encode"] == 0.0
    again = perceive_typed("I hate this, I am furious, it is ridiculous", "minimal@0")
    assert again.model_dump(exclude={"timings_ms"}) == perception.model_dump(exclude={"timings_ms"})


def test_a_typed_turn_without_emotion_words_stays_neutral() -> None:
    perception = MinimalPerceiver().perceive_text("The meeting is at three.")
    assert perception.emotion.label == "neutral" and perception.evidence == []
    assert perception.emotion.valence == pytest.approx(valence_arousal(perception.emotion.scores)[0])
