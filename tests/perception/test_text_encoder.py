"""The text encoder's LoRA tuning (perception.text_encoder_tuning) and loading it: tiny runs, real code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.base import PerceptionError
from perception.sentence_embedding import SentenceEmbedder
from perception.text_emotion import TextEmotionModel
from perception.text_encoder_tuning import ADAPTER_DIR, EncoderTuneConfig, tune_encoder

TEXTS = [
    "I lost my job today and I do not know what to do.",
    "My dog died this morning.",
    "We won the championship last night!",
    "I got the promotion I wanted for years.",
    "Someone broke into my car while I slept.",
    "I finally passed my driving test.",
] * 3
EMOTIONS = ["sad", "devastated", "joyful", "proud", "angry", "proud"] * 3


@pytest.mark.slow
def test_tuning_writes_an_adapter_that_changes_the_embedding_and_resumes(tmp_path) -> None:
    config = EncoderTuneConfig(steps=2, batch_size=4, save_every=1, learning_rate=5e-3)
    adapter = tune_encoder(TEXTS, EMOTIONS, tmp_path, config)
    assert adapter == tmp_path / ADAPTER_DIR and (adapter / "adapter_config.json").is_file()
    record = json.loads((adapter / "tuning.json").read_text())
    assert record["config"]["steps"] == 2 and record["texts"] == len(TEXTS)
    assert (adapter / "adapter_model.safetensors").stat().st_size < 2e6  # ships beside the heads

    plain, tuned = SentenceEmbedder(), SentenceEmbedder(adapter=adapter)
    a, b = plain(TEXTS[:2]), tuned(TEXTS[:2])
    assert a.shape == b.shape == (2, 384)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-4)  # the adapter moved the embedding

    # a longer run goes on from the checkpoint (step 2), it does not start again
    longer = EncoderTuneConfig(steps=3, batch_size=4, save_every=1, learning_rate=5e-3)
    import torch

    tune_encoder(TEXTS, EMOTIONS, tmp_path, longer)
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 3
    assert json.loads((adapter / "tuning.json").read_text())["config"]["steps"] == 3


@pytest.mark.slow
def test_a_text_model_saved_with_an_encoder_loads_it_and_a_missing_adapter_is_a_clear_error(tmp_path) -> None:
    adapter = tune_encoder(TEXTS, EMOTIONS, tmp_path, EncoderTuneConfig(steps=1, batch_size=4))
    rng = np.random.default_rng(0)
    model = TextEmotionModel(
        ["angry", "disgust", "fear", "happy", "neutral", "sad"],
        rng.normal(size=(6, 384)),
        np.zeros(6),
        rng.normal(size=(2, 384)),
        np.zeros(2),
        np.array([[-0.8, 0.2], [0.8, 0.4]]),
    )
    model.save(tmp_path / "text_emotion.npz", encoder=adapter.name)
    loaded = TextEmotionModel.load(tmp_path / "text_emotion.npz")
    assert loaded.embedder.adapter == adapter
    assert loaded.read("My dog died this morning.").label in loaded.labels
    with pytest.raises(PerceptionError, match="adapter"):
        SentenceEmbedder(adapter=tmp_path / "nowhere")(["hello"])
