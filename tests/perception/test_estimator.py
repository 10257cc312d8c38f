"""The estimator's asset format, probabilities and valence/arousal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perception.acoustics import CorpusNorms
from perception.base import PerceptionError
from perception.estimator import DEFAULT_ASSET, PROTOTYPES, ClassicalEstimator, valence_arousal
from perception.types import LABELS


def write_asset(path: Path, dim: int = 4) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        labels=np.array(LABELS),
        mean=np.zeros(dim, np.float32),
        scale=np.ones(dim, np.float32),
        coef=rng.standard_normal((len(LABELS), dim)).astype(np.float32),
        intercept=np.zeros(len(LABELS), np.float32),
        norms=np.array(json.dumps(CorpusNorms({"pitch_mean": 30.0}, {"pitch_mean": 4.0}).to_json())),
        meta=np.array(json.dumps({"version": 7})),
    )


def test_probabilities_sum_to_one(tmp_path: Path) -> None:
    write_asset(tmp_path / "m.npz")
    est = ClassicalEstimator.load(tmp_path / "m.npz")
    scores = est.predict_proba(np.array([1.0, -2.0, 0.5, 3.0], np.float32))
    assert list(scores) == list(LABELS)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-9)
    assert est.meta["version"] == 7 and est.norms.mean["pitch_mean"] == 30.0
    with pytest.raises(PerceptionError, match="shape"):
        est.predict_proba(np.zeros(3, np.float32))


def test_missing_or_bad_asset(tmp_path: Path) -> None:
    with pytest.raises(PerceptionError, match="train_classical"):
        ClassicalEstimator.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(PerceptionError):
        ClassicalEstimator.load(tmp_path / "bad.npz")


def test_shipped_asset_loads_without_pickle() -> None:
    est = ClassicalEstimator.load(DEFAULT_ASSET)
    assert est.coef.shape == (len(LABELS), est.dim)
    assert {"pitch_mean", "loudness_mean", "jitter", "shimmer", "hnr"} <= set(est.norms.mean)


def test_valence_arousal_prototypes_and_nudge() -> None:
    one_hot = {label: float(label == "angry") for label in LABELS}
    assert valence_arousal(one_hot) == PROTOTYPES["angry"]
    v, a = valence_arousal({label: 1 / 6 for label in LABELS})
    assert -1 <= v <= 1 and -1 <= a <= 1
    _, calm = valence_arousal(one_hot, {"pitch_mean": -6.0, "loudness_mean": -6.0})
    _, excited = valence_arousal(one_hot, {"pitch_mean": 6.0, "loudness_mean": 6.0})
    assert calm == pytest.approx(0.5) and excited == pytest.approx(0.9)
    assert valence_arousal({"happy": 1.0}, {"pitch_mean": 6.0})[1] <= 1.0
