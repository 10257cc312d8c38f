"""Speaker baseline math, z-scores and pause analysis."""

from __future__ import annotations

import numpy as np
import pytest

from perception.acoustics import CorpusNorms, RunningBaseline, pause_stats, zscores

NORMS = CorpusNorms(
    mean={"pitch_mean": 30.0, "loudness_mean": 1.0}, std={"pitch_mean": 4.0, "loudness_mean": 0.5}
)


def test_new_speaker_is_judged_against_corpus_norms() -> None:
    baseline = RunningBaseline(NORMS, min_turns=3)
    baseline.update({"pitch_mean": 50.0})
    baseline.update({"pitch_mean": 52.0})  # two turns: still below min_turns
    assert zscores({"pitch_mean": 38.0, "loudness_mean": 0.5}, baseline) == {
        "pitch_mean": 2.0,
        "loudness_mean": -1.0,
    }


def test_welford_matches_numpy_and_baseline_moves_to_the_speaker() -> None:
    values = [40.0, 42.0, 38.0, 41.0, 39.0, 40.0]
    baseline = RunningBaseline(NORMS, min_turns=3, prior_turns=5.0, std_floor=0.0)
    for v in values:
        baseline.update({"pitch_mean": v})
    stats = baseline._stats["pitch_mean"]
    assert stats.mean == pytest.approx(np.mean(values))
    assert stats.var == pytest.approx(np.var(values, ddof=1))
    w = len(values) / (len(values) + 5.0)
    mean, std = baseline.reference("pitch_mean")
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.sqrt(w * np.var(values, ddof=1) + (1 - w) * 16.0))
    # a naturally high-pitched speaker is no longer "raised" at their usual pitch
    assert abs(zscores({"pitch_mean": 40.0}, baseline)["pitch_mean"]) < 1.0


def test_std_floor_and_clipping() -> None:
    baseline = RunningBaseline(NORMS, min_turns=1, prior_turns=0.001, std_floor=0.5)
    for _ in range(5):
        baseline.update({"pitch_mean": 30.0})  # zero own variance
    assert baseline.reference("pitch_mean")[1] == pytest.approx(2.0)  # 0.5 * corpus std
    assert zscores({"pitch_mean": 1000.0}, baseline)["pitch_mean"] == 6.0


def test_unknown_cue_left_out_and_reset() -> None:
    baseline = RunningBaseline(NORMS)
    assert "jitter" not in zscores({"jitter": 0.02}, baseline)
    baseline.update({"pitch_mean": 50.0})
    assert baseline.n_turns == 1
    baseline.reset()
    assert baseline.n_turns == 0


def test_corpus_norms_roundtrip() -> None:
    norms = CorpusNorms.from_samples([{"a": 1.0}, {"a": 3.0}])
    assert norms.mean["a"] == 2.0 and norms.std["a"] == 1.0
    assert CorpusNorms.from_json(norms.to_json()) == norms


def test_pause_stats_finds_a_pause() -> None:
    rate = 16_000
    speech = 0.3 * np.sin(2 * np.pi * 200 * np.arange(rate // 2) / rate)
    audio = np.concatenate([speech, np.zeros(rate // 2), speech]).astype(np.float32)
    stats = pause_stats(audio)
    assert stats.n_pauses == 1
    assert stats.pause_share == pytest.approx(1 / 3, abs=0.03)
    assert stats.speech_span_s == pytest.approx(1.5, abs=0.05)


def test_submitted_measurement_equals_measure_and_runs_beside_the_caller() -> None:
    import threading

    from perception.acoustics import AcousticAnalyzer

    rate = 16_000
    t = np.arange(rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    analyzer = AcousticAnalyzer()
    caller = threading.get_ident()
    seen: list[int] = []
    original = analyzer.measure
    analyzer.measure = lambda a: seen.append(threading.get_ident()) or original(a)  # type: ignore[method-assign]
    measurement, ms = analyzer.submit(audio).result(timeout=60)
    assert seen and seen[0] != caller  # measured on the analyzer's worker thread
    assert ms > 0
    np.testing.assert_allclose(measurement.functionals, original(audio).functionals, rtol=1e-6)

    def broken(_audio: np.ndarray) -> None:
        raise RuntimeError("openSMILE failed")

    analyzer.measure = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="openSMILE failed"):  # the caller gets the worker's error
        analyzer.submit(audio).result(timeout=60)
