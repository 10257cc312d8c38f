"""The language model is loaded only when something reads it: generation (``reasoning_tokens`` > 0) or LM
label scores. Without it the towers, adapters and aux heads give the same scores (tiny models; the shipped
run in the slow test at the end)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.audiollm.checkpoint import attach_language_model, load_trainable, trainable_state_dict
from perception.audiollm.perceiver import AudioLLMPerceiver
from perception.audiollm.turn_features import TurnFeatures
from perception.config import PerceptionSettings
from perception.grounding import verify
from tests.audiollm.conftest import fake_features
from tests.audiollm.test_perceiver import train_tiny_run


def _saved_tiny(tiny, folder: Path) -> Path:
    _, _, model = tiny
    with torch.no_grad():  # trained-looking parts (LoRA B starts at zero), so a missed tensor would show
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(folder)
    return folder


def _batch(processor, target: str | None = "angry"):
    rng = np.random.default_rng(1)
    examples = [
        processor.encode("emotion", *fake_features(seconds, rng), target=target, emotion=label)
        for seconds, label in ((1.2, "angry"), (0.8, "sad"))
    ]
    batch = processor.collate(examples, padding_side="left")
    return batch, batch.pop("emotion_labels")


def test_a_model_loaded_without_its_lm_has_the_same_aux_scores_and_refuses_the_rest(tiny, tmp_path) -> None:
    _, processor, _ = tiny
    folder = _saved_tiny(tiny, tmp_path / "run")
    full = load_trainable(folder)
    lean = load_trainable(folder, with_language_model=False)
    assert lean.language_model is None and lean.hidden_size == full.hidden_size
    assert not any(name.startswith("language_model.") for name in lean.state_dict())
    for name, tensor in trainable_state_dict(lean).items():
        assert torch.equal(tensor, trainable_state_dict(full)[name]), name

    batch, labels = _batch(processor)
    prompts = {k: v for k, v in batch.items() if k != "labels"}
    audio_only = {k: v for k, v in prompts.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.equal(lean.emotion_logits(**audio_only), full.emotion_logits(**audio_only))
        assert torch.equal(
            lean.label_scores(**prompts, source="aux"), full.label_scores(**prompts, source="aux")
        )
        assert torch.equal(lean.aux_loss(labels, **batch), full.aux_loss(labels, **batch))
        tokens, counts = lean.embed_audio(**audio_only)  # the adapters work without the LM too
        assert torch.equal(tokens, full.embed_audio(**audio_only)[0]) and counts.shape == (2, 2)
        for refused in (
            lambda: lean(**batch),
            lambda: lean.generate(**prompts),
            lambda: lean.label_scores(**prompts, source="lm", label_token_ids=processor.label_token_ids()),
        ):
            with pytest.raises(ValueError, match="without its language model"):
                refused()
    with pytest.raises(ValueError, match="without its language model"):
        lean.save_pretrained(tmp_path / "copy")  # it would lose the LoRA


def test_attaching_the_lm_later_gives_the_full_model(tiny, tmp_path) -> None:
    _, processor, _ = tiny
    folder = _saved_tiny(tiny, tmp_path / "run")
    full = load_trainable(folder)
    lean = load_trainable(folder, with_language_model=False)
    attach_language_model(lean, folder)
    assert not lean.training
    own, expected = trainable_state_dict(lean), trainable_state_dict(full)
    assert set(own) == set(expected) and any("lora_" in name for name in own)
    assert all(torch.equal(own[name], expected[name]) for name in own)
    batch, labels = _batch(processor)
    with torch.no_grad():
        ours, theirs = lean(**batch, emotion_labels=labels), full(**batch, emotion_labels=labels)
    assert torch.equal(ours.logits, theirs.logits) and torch.equal(ours.loss, theirs.loss)
    with pytest.raises(ValueError, match="already has"):
        attach_language_model(lean, folder)


def test_a_checkpoint_whose_lora_does_not_fit_is_refused(tiny, tmp_path, tiny_lm_dir) -> None:
    from tests.audiollm.conftest import load_lm

    folder = _saved_tiny(tiny, tmp_path / "run")
    lean = load_trainable(folder, with_language_model=False)
    lean.config.lora.target_modules = ["q_proj"]  # fewer adapted modules than the checkpoint saved
    with pytest.raises(ValueError, match="does not fit the language model"):
        attach_language_model(lean, folder, load_lm(tiny_lm_dir))


# -- the perceiver --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("lazy") / "tiny-run", tiny_lm_dir)


def scripted_features(audio: np.ndarray) -> TurnFeatures:
    """The same Whisper-sized streams for every turn (no Whisper needed)."""
    rng = np.random.default_rng(7)
    semantic = rng.standard_normal((40, 384)).astype(np.float32)
    mel = rng.standard_normal((80, 80)).astype(np.float32)
    return TurnFeatures("kids are talking by the door", semantic, mel, {"asr": 0.0, "encode": 0.0})


@pytest.fixture(scope="module")
def turn_audio() -> np.ndarray:
    t = np.arange(16_000) / 16_000
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.01
    return (0.3 * np.sin(2 * np.pi * 180 * t) + noise).astype(np.float32)


def _perceiver(run_dir: Path, reasoning_tokens: int) -> AudioLLMPerceiver:
    return AudioLLMPerceiver(
        PerceptionSettings(reasoning_tokens=reasoning_tokens),
        run_dir=run_dir,
        features=scripted_features,
        warmup=False,
    )


def _refuse_lm_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the language model must not be loaded")

    monkeypatch.setattr("perception.audiollm.modeling.load_language_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)


def test_no_reasoning_tokens_no_language_model(run_dir, turn_audio, monkeypatch) -> None:
    with_lm = _perceiver(run_dir, reasoning_tokens=8)
    with_lm.max_new_tokens = 0  # the same scores path as the lean one, with the LM in memory
    expected, _ = with_lm.perceive_with_cues(turn_audio)
    _refuse_lm_loading(monkeypatch)
    lean = _perceiver(run_dir, reasoning_tokens=0)
    assert not lean.needs_language_model and not lean.language_model_loaded
    assert lean.model.language_model is None
    perception, cues = lean.perceive_with_cues(turn_audio)
    assert perception.emotion == expected.emotion  # the aux heads decide; the LM changes nothing
    assert perception.reasoning == expected.reasoning and perception.evidence == expected.evidence
    n_claims, n_verified = verify(perception, perception.transcript, cues)
    assert perception.evidence and n_claims == n_verified
    assert lean.model.language_model is None and lean.generation_stats.turns == 0


def test_reasoning_tokens_load_the_lm_at_start_up_merged(run_dir, turn_audio) -> None:
    perceiver = _perceiver(run_dir, reasoning_tokens=8)
    assert perceiver.needs_language_model and perceiver.language_model_loaded  # before any turn
    assert not any("lora_" in name for name, _ in perceiver.model.named_parameters())  # LoRA folded in
    perceiver.perceive(turn_audio)
    assert perceiver.generation_stats.turns == 1 and perceiver.generation_stats.tokens > 0


def test_turning_generation_on_later_loads_the_lm_then(run_dir, turn_audio) -> None:
    perceiver = _perceiver(run_dir, reasoning_tokens=0)
    first = perceiver.perceive(turn_audio)
    assert not perceiver.language_model_loaded
    perceiver.max_new_tokens = 8
    second = perceiver.perceive(turn_audio)
    assert perceiver.language_model_loaded and perceiver.generation_stats.turns == 1
    assert second.emotion == first.emotion
    perceiver.ensure_language_model()  # loaded once
    assert perceiver.language_model_loaded


def test_lm_label_scores_need_the_lm_whatever_the_reasoning_tokens(run_dir, tmp_path, turn_audio) -> None:
    copy = tmp_path / "tiny-run"
    shutil.copytree(run_dir.parent, copy)  # with the run folder's feature_norms.json
    config = json.loads((copy / "final" / "config.json").read_text())
    config["score_source"] = "lm"
    (copy / "final" / "config.json").write_text(json.dumps(config))
    perceiver = _perceiver(copy / "final", reasoning_tokens=0)
    assert perceiver.needs_language_model and perceiver.language_model_loaded
    scores = perceiver.perceive(turn_audio).emotion.scores
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_the_shipped_run_scores_the_same_without_its_lm(crema_dir, monkeypatch) -> None:
    """The default settings do not load the shipped run's SmolLM2; the scores of held-out speakers'
    clips are those of the run loaded with it."""
    from perception.audio import load_audio
    from perception.audiollm.turn_features import WhisperTurnFeatures

    clips = [crema_dir / "audio" / name for name in ("1002_DFA_ANG_XX.ogg", "1003_DFA_SAD_XX.ogg")]
    with_lm = AudioLLMPerceiver(PerceptionSettings(reasoning_tokens=8), warmup=False)
    assert with_lm.language_model_loaded
    with_lm.max_new_tokens = 0
    expected = [with_lm.perceive(load_audio(clip)) for clip in clips]
    features = with_lm.features
    del with_lm
    _refuse_lm_loading(monkeypatch)
    lean = AudioLLMPerceiver(PerceptionSettings(), features=features, warmup=False)
    assert isinstance(lean.features, WhisperTurnFeatures) and not lean.language_model_loaded
    for clip, before in zip(clips, expected, strict=True):
        after = lean.perceive(load_audio(clip))
        assert after.model_dump(exclude={"timings_ms"}) == before.model_dump(exclude={"timings_ms"})
