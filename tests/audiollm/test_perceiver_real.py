"""The AudioLLM perceiver with the default configuration and the real bundled SmolLM2 (marked slow).

The run is saved untrained from the test (adapters at their initial weights), so this checks loading,
the real feature path, label-likelihood scores and generation at full size, not accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from perception.grounding import verify
from perception.types import LABELS, Perception

pytestmark = pytest.mark.slow


def test_default_config_with_the_bundled_lm(tmp_path, crema_dir) -> None:
    from transformers import AutoTokenizer

    from perception.audio import load_audio
    from perception.audiollm import DualEncoderConfig, DualEncoderForEmotionReasoning, DualEncoderProcessor
    from perception.audiollm.modeling import resolve_language_model
    from perception.audiollm.perceiver import AudioLLMPerceiver
    from perception.audiollm.speaker_norm import FeatureNorms
    from perception.evaluation import read_manifest, word_error_rate

    rows, _ = read_manifest(crema_dir / "manifest.csv")
    angry = [r for r in rows if r.emotion == "angry" and r.path.stem.endswith("_XX")]
    clips = [r for actor in ("1002", "1003", "1006") for r in [x for x in angry if x.speaker == actor][:2]]
    assert len(clips) == 6  # three actors held out of the shipped run, two angry sentences each
    config = DualEncoderConfig()
    tokenizer = AutoTokenizer.from_pretrained(resolve_language_model(config.language_model))
    DualEncoderProcessor(config, tokenizer)  # adds the audio placeholder, records its id
    run = tmp_path / "default-run" / "final"
    DualEncoderForEmotionReasoning.from_config(config).save_pretrained(run)
    tokenizer.save_pretrained(run)
    FeatureNorms(  # standard-normal corpus statistics for the speaker normalisation
        {
            "semantic": np.zeros(config.semantic.hidden_size),
            "paralinguistic": np.zeros(config.paralinguistic.n_mels),
        },
        {
            "semantic": np.ones(config.semantic.hidden_size),
            "paralinguistic": np.ones(config.paralinguistic.n_mels),
        },
    ).save(run.parent)

    perceiver = AudioLLMPerceiver(run_dir=run, max_new_tokens=48, warmup=False)
    transcripts = []
    for row in clips:
        perception, cues = perceiver.perceive_with_cues(load_audio(row.path))
        Perception.model_validate(perception.model_dump())
        assert set(perception.emotion.scores) == set(LABELS)
        assert sum(perception.emotion.scores.values()) == pytest.approx(1.0, abs=1e-6)
        assert perception.model == "dual-encoder:default-run@" + config.version
        n_claims, n_verified = verify(perception, perception.transcript, cues)
        assert n_claims == n_verified > 0
        transcripts.append(perception.transcript)
    # The default ASR path on real speech: tiny.en's standard pass reaches WER 0.22 over 360 held-out
    # clips (docs/perception.md); six clips scatter around that, and a broken path lands near 1.0.
    assert word_error_rate([r.transcript for r in clips], transcripts) < 0.4, transcripts
