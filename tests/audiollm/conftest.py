"""Tiny parts for the AudioLLM tests: a word-level tokenizer, a random 2-layer Llama (hidden 32) saved to a
temporary folder, and tiny encoder configs. Everything builds in well under a second on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from perception.audiollm import (
    DualEncoderConfig,
    DualEncoderForEmotionReasoning,
    DualEncoderProcessor,
    LoraSettings,
    ParalinguisticEncoderConfig,
    ProjectorConfig,
    SemanticEncoderConfig,
)
from perception.audiollm.processing import SYSTEM_PROMPT, task_instruction
from perception.types import LABELS

WORDS = sorted(
    set(
        (SYSTEM_PROMPT + " " + " ".join(task_instruction(t, list(LABELS)) for t in ("asr", "emotion")))
        .replace(".", " ")
        .replace(",", " ")
        .replace(":", " ")
        .replace("?", " ")
        .lower()
        .split()
    )
    | set(LABELS)
    | {"kids", "are", "talking", "by", "the", "door", "label", "reasoning", "system", "user", "assistant"}
)


def make_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2}
    for w in WORDS + list(".,:?!'\"()|+-=_"):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
    )


def tiny_config(lm_path: Path | str, **overrides) -> DualEncoderConfig:
    cfg = DualEncoderConfig(
        semantic=SemanticEncoderConfig(hidden_size=16, stack=5),
        paralinguistic=ParalinguisticEncoderConfig(
            n_mels=8, hidden_size=32, num_layers=2, num_heads=2, dropout=0.0
        ),
        projector=ProjectorConfig(hidden_size=32),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        language_model=str(lm_path),
        acoustic_functionals=0,  # tests that feed acoustic descriptors set it
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-lm")
    n_vocab = len(make_tokenizer().get_vocab()) + 1  # + the audio placeholder the processor adds
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=n_vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            pad_token_id=1,
            eos_token_id=2,
            bos_token_id=2,
        )
    )
    lm.save_pretrained(path)
    return path


def load_lm(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.fixture()
def tiny(tiny_lm_dir):
    """(config, processor, model) with fresh weights."""
    torch.manual_seed(0)
    cfg = tiny_config(tiny_lm_dir)
    processor = DualEncoderProcessor(cfg, make_tokenizer())
    model = DualEncoderForEmotionReasoning(cfg, load_lm(tiny_lm_dir))
    return cfg, processor, model


def fake_features(seconds: float, rng: np.random.Generator, n_mels: int = 8, width: int = 16):
    """(semantic states (T, C) at 50 fps, log-mel (n_mels, T) at 100 fps) of a clip of ``seconds``."""
    return (
        rng.standard_normal((int(seconds * 50), width)).astype(np.float32),
        rng.standard_normal((n_mels, int(seconds * 100))).astype(np.float32),
    )
