"""Shapes, the placeholder check, learning, save/load and label scores of the dual-encoder model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perception.audiollm import DualEncoderConfig, DualEncoderForEmotionReasoning, audio_token_counts, scoring
from tests.audiollm.conftest import fake_features, load_lm


def _batch(processor, task="emotion", seconds=(1.0, 1.7), target="angry", padding="right", seed=0):
    rng = np.random.default_rng(seed)
    examples = [
        processor.encode(task, *fake_features(s, rng), target=target, emotion="angry" if target else None)
        for s in seconds
    ]
    return processor.collate(examples, padding)


def test_config_json_round_trip(tmp_path, tiny):
    cfg, _, _ = tiny
    cfg.save(tmp_path)
    assert DualEncoderConfig.load(tmp_path) == cfg
    with pytest.raises(ValueError, match="unknown DualEncoderConfig field"):
        DualEncoderConfig.from_dict({"nonsense": 1})


def test_audio_token_counts_match_projected_frames(tiny):
    cfg, processor, model = tiny
    batch = _batch(processor)
    out = model(**batch)
    for i, (n_sem_in, n_para_in) in enumerate(
        zip(batch["semantic_lengths"], batch["paralinguistic_lengths"], strict=True)
    ):
        assert tuple(out.audio_token_counts[i].tolist()) == audio_token_counts(
            cfg, int(n_sem_in), int(n_para_in)
        )
    # 1 s: 50 states / 5 = 10 semantic tokens; 100 mel frames -> 25 frames / 5 = 5 paralinguistic tokens
    assert audio_token_counts(cfg, 50, 100) == (10, 5)
    b, length = batch["input_ids"].shape
    assert out.logits.shape == (b, length, model.language_model.get_input_embeddings().weight.shape[0])
    assert out.aux_logits.shape == (b, len(cfg.labels))
    assert out.loss is not None and out.loss.ndim == 0
    logits, loss = out  # nanoGPT-style unpacking
    assert loss is out.loss


def test_placeholder_mismatch_names_both_counts(tiny):
    cfg, processor, model = tiny
    batch = _batch(processor)
    ids = batch["input_ids"].clone()
    first = int((ids[0] == cfg.audio_token_id).nonzero()[0])
    ids[0, first] = processor.pad_id  # one placeholder fewer than projected frames
    expected = int((batch["input_ids"] == cfg.audio_token_id).sum())
    with pytest.raises(
        ValueError, match=rf"placeholder tokens \({expected - 1}\).*audio frames \({expected}\)"
    ):
        model(
            ids,
            batch["attention_mask"],
            batch["semantic_features"],
            batch["paralinguistic_features"],
            semantic_lengths=batch["semantic_lengths"],
            paralinguistic_lengths=batch["paralinguistic_lengths"],
        )


def test_labels_mask_prompt_and_audio(tiny):
    cfg, processor, _ = tiny
    batch = _batch(processor)
    labels, ids = batch["labels"], batch["input_ids"]
    assert (labels[ids == cfg.audio_token_id] == -100).all()
    kept = labels[0][labels[0] != -100].tolist()
    assert kept == processor.target_ids("angry")


def test_answer_prefix_starts_the_generation_prompt(tiny):
    """The perceiver starts the answer as ``label: <label>``: the prompt ends with exactly those tokens,
    and a prefix is refused for training examples (it belongs in the target there)."""
    cfg, processor, _ = tiny
    sem, mel = fake_features(1.0, np.random.default_rng(0))
    plain = processor.encode("emotion_reasoning", sem, mel)
    started = processor.encode("emotion_reasoning", sem, mel, prefix="label: sad\n")
    prefix_ids = processor._ids("label: sad\n")
    assert prefix_ids and started.input_ids == plain.input_ids + prefix_ids
    assert started.input_ids.count(cfg.audio_token_id) == plain.input_ids.count(cfg.audio_token_id)
    with pytest.raises(ValueError, match="prefix"):
        processor.encode("emotion_reasoning", sem, mel, target="label: sad", prefix="label: sad\n")


def test_loss_falls_on_a_tiny_batch(tiny):
    _, processor, model = tiny
    batch = _batch(
        processor, task="emotion_reasoning", target="label: angry\nreasoning: the speaker sounds angry."
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-2)
    losses = []
    for _ in range(12):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0], losses  # LoRA-only on a frozen random LM: a clear, not total, fall


def test_save_load_round_trip_identical_outputs(tmp_path, tiny, tiny_lm_dir):
    cfg, processor, model = tiny
    batch = _batch(processor)
    with torch.no_grad():  # perturb every trained part so a missed tensor would show
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["config.json", "trainable.safetensors"]
    again = DualEncoderForEmotionReasoning.from_pretrained(tmp_path)  # base LM from config.language_model
    with torch.no_grad():
        a, b = model(**batch), again(**batch)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.aux_logits, b.aux_logits)


def test_label_scores_sum_to_one_and_generate(tiny):
    cfg, processor, model = tiny
    model.eval()
    batch = _batch(processor, target=None, padding="left")
    args = (
        batch["input_ids"],
        batch["attention_mask"],
        batch["semantic_features"],
        batch["paralinguistic_features"],
    )
    lengths = {
        "semantic_lengths": batch["semantic_lengths"],
        "paralinguistic_lengths": batch["paralinguistic_lengths"],
    }
    for source in ("lm", "aux"):
        scores = model.label_scores(*args, processor.label_token_ids(), source=source, **lengths)
        assert scores.shape == (2, len(cfg.labels))
        assert torch.allclose(scores.sum(dim=1), torch.ones(2), atol=1e-5)
    fast = model.label_scores(*args, processor.label_token_ids(), source="lm", **lengths)
    general = scoring.label_scores(
        model, *args, processor.label_token_ids(), source="lm", single_pass=False, **lengths
    )
    assert torch.allclose(fast, general, atol=1e-5)
    multi = [[5], [6, 7], [8, 9, 10]]  # labels of 1-3 tokens: the cached pass equals one pass per label
    cached = scoring.label_scores(model, *args, multi, **lengths)
    assert torch.allclose(
        cached, scoring.label_scores(model, *args, multi, single_pass=False, **lengths), atol=1e-5
    )
    new = model.generate(*args, max_new_tokens=4, **lengths)
    assert new.shape[0] == 2 and new.shape[1] <= 4
    assert cfg.audio_token_id not in new.tolist()[0]


def test_left_padding_gives_the_same_scores_as_alone(tiny):
    _, processor, model = tiny
    model.eval()
    batch = _batch(processor, target=None, padding="left")
    alone = _batch(processor, target=None, padding="left", seconds=(1.0,))

    def kw(b):
        return {
            "semantic_lengths": b["semantic_lengths"],
            "paralinguistic_lengths": b["paralinguistic_lengths"],
        }

    both = model.label_scores(
        batch["input_ids"],
        batch["attention_mask"],
        batch["semantic_features"],
        batch["paralinguistic_features"],
        processor.label_token_ids(),
        **kw(batch),
    )
    one = model.label_scores(
        alone["input_ids"],
        alone["attention_mask"],
        alone["semantic_features"],
        alone["paralinguistic_features"],
        processor.label_token_ids(),
        **kw(alone),
    )
    assert torch.allclose(both[0], one[0], atol=1e-4)


def test_lm_only_loads_from_a_folder(tiny_lm_dir):
    lm = load_lm(tiny_lm_dir)
    assert lm.config.hidden_size == 32


def test_merged_lora_gives_the_same_outputs(tiny):
    """The perceiver folds LoRA into the LM for speed: outputs must not change, and saving is refused."""
    _, processor, model = tiny
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # trained-looking adapters (B starts at zero)
    model.eval()
    batch = _batch(processor, target=None, padding="left")
    batch.pop("emotion_labels", None)
    before = model(**batch).logits
    model.merge_lora()
    after = model(**batch).logits
    assert torch.allclose(before, after, atol=1e-4)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="merged"):
        model.save_pretrained("unused")


def test_aux_head_reads_acoustic_descriptors_with_checked_shapes(tiny_lm_dir):
    """An aux head with ``acoustic_functionals`` reads them beside the pooled states; the processor
    carries them, a missing or mis-sized input is a precise error, and they change the scores."""
    from perception.audiollm import DualEncoderProcessor
    from tests.audiollm.conftest import make_tokenizer, tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(tiny_lm_dir, acoustic_functionals=6)
    processor = DualEncoderProcessor(cfg, make_tokenizer())
    model = DualEncoderForEmotionReasoning(cfg, load_lm(tiny_lm_dir)).eval()
    rng = np.random.default_rng(0)
    streams = [fake_features(s, rng) for s in (1.0, 1.4)]
    examples = [processor.encode("emotion", *f, acoustic=rng.standard_normal(6)) for f in streams]
    batch = processor.collate(examples, "left")
    assert batch["acoustic_features"].shape == (2, 6)
    keys = ("semantic_features", "paralinguistic_features", "semantic_lengths", "paralinguistic_lengths")
    inputs = {k: batch[k] for k in keys}
    logits = model.emotion_logits(**inputs, acoustic_features=batch["acoustic_features"])
    assert logits.shape == (2, len(cfg.labels))
    moved = model.emotion_logits(**inputs, acoustic_features=batch["acoustic_features"] + 3.0)
    assert not torch.allclose(logits, moved)
    with pytest.raises(ValueError, match=r"reads acoustic_features of shape \(2, 6\)"):
        model.emotion_logits(**inputs)
    with pytest.raises(ValueError, match=r"shape \(2, 5\), expected \(2, 6\)"):
        model.emotion_logits(**inputs, acoustic_features=batch["acoustic_features"][:, :5])
    with pytest.raises(ValueError, match=r"shape \(4,\), the model reads \(6,\)"):
        processor.encode("emotion", *streams[0], acoustic=np.zeros(4))
    mixed = [examples[0], processor.encode("emotion", *streams[1])]
    with pytest.raises(ValueError, match="every example of a batch"):
        processor.collate(mixed)
    batch.pop("emotion_labels")
    probs = model.label_scores(**batch, source="aux")
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


def test_configs_saved_before_acoustic_descriptors_load_without_them():
    old = DualEncoderConfig().to_dict()
    del old["acoustic_functionals"]
    assert DualEncoderConfig.from_dict(old).acoustic_functionals == 0
    assert DualEncoderConfig.from_dict(DualEncoderConfig().to_dict()).acoustic_functionals == 88


def test_pooled_only_pass_gives_the_same_aux_logits(tiny):
    """``emotion_logits`` and the ``aux_only`` loss skip the adapters; the head sees the same input."""
    _, processor, model = tiny
    model.eval()
    rng = np.random.default_rng(5)
    examples = [processor.encode("emotion", *fake_features(s, rng)) for s in (0.7, 1.1)]
    batch = processor.collate(examples)
    batch.pop("emotion_labels", None)
    audio_inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
    streams = [batch[k] for k in ("semantic_features", "paralinguistic_features")]
    lengths = [batch[k] for k in ("semantic_lengths", "paralinguistic_lengths")]
    _, _, pooled = model.embed_audio(*streams, *lengths, return_pooled=True)
    tokens, counts, pooled_only = model.embed_audio(*streams, *lengths, return_pooled=True, project=False)
    assert tokens is None and counts.shape == (2, 2) and torch.equal(pooled, pooled_only)
    with torch.no_grad():
        assert torch.allclose(model.emotion_logits(**audio_inputs), model.aux_head(pooled))
    with pytest.raises(ValueError, match="pooled"):
        model.embed_audio(*streams, project=False)


def test_prompt_ids_are_tokenised_once_and_stay_the_same(tiny):
    from perception.audiollm.processing import task_instruction

    cfg, processor, _ = tiny
    before, after = processor._render(task_instruction("emotion", cfg.labels))
    expected = processor._ids(before) + [cfg.audio_token_id] * 3 + processor._ids(after)
    first = processor.prompt_ids("emotion", 3)
    first.append(-1)  # a caller editing its list does not change the next prompt
    assert processor.prompt_ids("emotion", 3) == expected and first[:-1] == expected
    assert processor.prompt_ids("asr", 3) != expected


def test_reasoning_context_reaches_only_reasoning_prompts_of_a_context_model(tiny) -> None:
    from perception.audiollm.processing import reasoning_context

    cfg, processor, _ = tiny
    context = reasoning_context(
        {"speaking_rate": 1.79, "loudness_mean": -0.4, "not_a_cue": 9.0}, "It's  eleven o'clock."
    )
    lines = context.splitlines()
    assert lines[0].startswith("measured: speaking_rate +1.79 ") and lines[1].startswith(
        "measured: loudness_mean"
    )
    assert lines[-1] == "transcript: \"It's eleven o'clock.\"" and "not_a_cue" not in context
    rng = np.random.default_rng(2)
    sem, mel = fake_features(0.8, rng)

    def prompt(task, flag):
        cfg.reasoning_context = flag
        return processor.encode(task, sem, mel, context=context).input_ids

    try:
        plain = prompt("emotion_reasoning", False)
        with_context = prompt("emotion_reasoning", True)
        assert prompt("emotion", True) == prompt("emotion", False)  # other tasks never read it
    finally:
        cfg.reasoning_context = False
    assert len(with_context) > len(plain)
    ids = processor._ids(context)
    assert any(with_context[i : i + len(ids)] == ids for i in range(len(with_context)))
    assert with_context.count(cfg.audio_token_id) == plain.count(cfg.audio_token_id)


def test_configs_saved_before_reasoning_context_load_without_it(tiny) -> None:
    cfg, _, _ = tiny
    data = cfg.to_dict()
    data.pop("reasoning_context", None)
    assert DualEncoderConfig.from_dict(data).reasoning_context is False
