"""The dual-encoder model's language model: finding it, loading it and fitting it with the audio
placeholder and LoRA.

The LM writes the ``emotion_reasoning`` answer and, with ``score_source="lm"``, gives the label-token
likelihoods; training always has it. The aux heads and the towers with their adapters do not need it, so
a perceiver that neither generates nor scores with the LM never loads it
(:func:`perception.audiollm.checkpoint.load_trainable` with ``with_language_model=False``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from perception.audiollm.configuration import DualEncoderConfig


def resolve_language_model(source: str, cache_dir: Path | None = None) -> str:
    """Path or hub id of the LM: the bundled SmolLM2 is converted once by :mod:`perception.bundled_lm`."""
    from perception.bundled_lm import BUNDLED_MODEL, convert_bundled_model

    if source == BUNDLED_MODEL:
        from perception.config import default_cache_dir

        return str(convert_bundled_model(cache_dir or default_cache_dir()))
    return source


def load_language_model(config: DualEncoderConfig, cache_dir: Path | None = None) -> nn.Module:
    """The base causal LM of ``config.language_model`` in float32 (no placeholder row, no LoRA yet)."""
    from transformers import AutoModelForCausalLM

    path = resolve_language_model(config.language_model, cache_dir)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def prepare_language_model(config: DualEncoderConfig, lm: nn.Module) -> nn.Module:
    """``lm`` with a vocabulary row for the audio placeholder (zeros: never read as input, overwritten by
    audio), its own weights frozen, and peft LoRA adapters when ``config.lora.r > 0``."""
    token_id = int(config.audio_token_id)  # type: ignore[arg-type]
    vocab = lm.get_input_embeddings().weight.shape[0]
    if token_id >= vocab:  # the placeholder was added to the tokenizer: grow the vocabulary
        lm.resize_token_embeddings(token_id + 1, mean_resizing=False)
        with torch.no_grad():  # deterministic rows
            lm.get_input_embeddings().weight[vocab:] = 0.0
            out = lm.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != lm.get_input_embeddings().weight.data_ptr():
                out.weight[vocab:] = 0.0
    for p in lm.parameters():
        p.requires_grad_(False)
    if config.lora.r > 0:
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        lm = get_peft_model(lm, peft_config)
    return lm


def hidden_size(lm: nn.Module) -> int:
    """Width of the LM's token embeddings: what the adapters project audio frames to."""
    return int(lm.config.hidden_size)  # type: ignore[union-attr]
