"""The classical perceiver (``perception.pipeline``) with its shipped estimator on real CREMA-D clips
(real Whisper and openSMILE; marked slow). The default AudioLLM has its own: tests/audiollm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.audio import load_audio
from perception.base import AudioError
from perception.evaluation import read_manifest
from perception.grounding import verify
from perception.types import LABELS, Perception

CREMA_D = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "crema-d").resolve()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def perceiver(crema_dir):
    from agent.config import PerceptionSettings
    from perception.registry import build_perceiver

    return build_perceiver(PerceptionSettings(estimator="classical"))


def test_real_clips_give_valid_grounded_perceptions(perceiver) -> None:
    rows, _ = read_manifest(CREMA_D / "manifest.csv")
    # a strongly (HI intensity) angry clip, from a speaker the classical estimator never trained on
    assert "1082" in perceiver.estimator.meta["val_actors"]
    angry = next(r for r in rows if r.path.name == "1082_IEO_ANG_HI.ogg")
    others = [r for r in rows if r.path.name in {"1082_IEO_SAD_HI.ogg", "1082_TIE_NEU_XX.ogg"}]
    baseline = perceiver.new_baseline()
    for row in [angry, *others]:
        perception, cues = perceiver.perceive_with_cues(load_audio(row.path), baseline=baseline)
        Perception.model_validate(perception.model_dump())
        assert set(perception.emotion.scores) == set(LABELS)
        assert sum(perception.emotion.scores.values()) == pytest.approx(1.0, abs=1e-3)
        assert perception.transcript and perception.reasoning
        assert {"asr", "encode", "reason"} <= set(perception.timings_ms)
        n_claims, n_ok = verify(perception, perception.transcript, cues)
        assert n_claims >= 1 and n_ok == n_claims
        if row is angry:
            top2 = sorted(perception.emotion.scores, key=perception.emotion.scores.get, reverse=True)[:2]
            assert "angry" in top2, perception.emotion.scores
            assert perception.emotion.arousal > 0
    assert baseline.n_turns == 3


def test_concurrent_calls_match_sequential(perceiver) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clips = [load_audio(CREMA_D / "audio" / f"1089_{s}.ogg") for s in ("DFA_HAP_XX", "MTI_FEA_XX")]
    sequential = [perceiver.perceive(a).emotion.scores for a in clips]
    with ThreadPoolExecutor(2) as pool:
        concurrent = [p.emotion.scores for p in pool.map(perceiver.perceive, clips)]
    assert concurrent == sequential


def test_short_and_silent_turns_are_rejected(perceiver) -> None:
    with pytest.raises(AudioError, match="too short"):
        perceiver.perceive(np.full(3000, 0.1, dtype=np.float32))
    with pytest.raises(AudioError, match="silent"):
        perceiver.perceive(np.zeros(16_000, dtype=np.float32))


def test_typed_turn(perceiver) -> None:
    text = "I'm so scared about tomorrow"
    perception = perceiver.perceive_text(text)  # read by the shipped text-emotion model
    assert perception.emotion.label in LABELS and perception.emotion.valence < 0
    assert "no audio" in perception.reasoning
    assert perception.evidence and all(e.kind == "lexical" and e.quote in text for e in perception.evidence)
