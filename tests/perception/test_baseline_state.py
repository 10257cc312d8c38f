"""Speaker baselines as JSON state: a worker continuing another's conversation sees the same speaker."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.acoustics import CorpusNorms, RunningBaseline
from perception.audiollm import DualEncoderConfig
from perception.audiollm.perceiver import AudioLLMBaseline
from perception.audiollm.speaker_norm import FeatureNorms, SpeakerFeatures
from perception.base import SpeakerBaseline

CONFIG = DualEncoderConfig()  # whisper-ct2 states (T, 384), mel-cnn log-mel (80, T)
NORMS = CorpusNorms({"pitch_mean": 40.0, "loudness_mean": 0.5}, {"pitch_mean": 3.0, "loudness_mean": 0.2})


def _through_json(state: dict) -> dict:
    return json.loads(json.dumps(state))


def test_a_running_baseline_continues_exactly_from_its_state() -> None:
    rng = np.random.default_rng(0)
    baseline = RunningBaseline(NORMS, min_turns=2)
    for _ in range(5):
        baseline.update({"pitch_mean": 40 + rng.normal(), "loudness_mean": 0.5 + rng.normal() / 10})
    restored = RunningBaseline(NORMS, min_turns=7)
    restored.load_state(_through_json(baseline.to_state()))
    assert restored.min_turns == 2 and restored.n_turns == 5
    for cue in ("pitch_mean", "loudness_mean"):
        assert restored.reference(cue) == baseline.reference(cue)
    turn = {"pitch_mean": 44.0, "loudness_mean": 0.9}
    assert restored.zscores(turn) == baseline.zscores(turn)


def test_an_audiollm_baseline_carries_its_stream_statistics() -> None:
    rng = np.random.default_rng(1)
    clips = [
        (rng.standard_normal((30, 384)).astype(np.float32), rng.standard_normal((80, 60)).astype(np.float32))
        for _ in range(6)
    ]
    norms = FeatureNorms.fit(CONFIG, clips)
    baseline = AudioLLMBaseline(NORMS, features=SpeakerFeatures(CONFIG, norms))
    for sem, mel in clips[:3]:
        baseline.features.add(sem + 2, mel + 1)
        baseline.update({"pitch_mean": 45.0})
    restored = AudioLLMBaseline(NORMS, features=SpeakerFeatures(CONFIG, norms))
    restored.load_state(_through_json(baseline.to_state()))
    sem, mel = clips[4]
    for got, want in zip(
        restored.features.normalize(sem, mel), baseline.features.normalize(sem, mel), strict=True
    ):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)
    assert restored.n_turns == 3 and restored.to_state() == baseline.to_state()
    restored.reset()
    assert restored.n_turns == 0 and not restored.features.stats


def test_a_baseline_without_a_state_says_so() -> None:
    class Opaque(SpeakerBaseline):
        def reset(self) -> None: ...

    with pytest.raises(NotImplementedError, match="Opaque"):
        Opaque().to_state()
