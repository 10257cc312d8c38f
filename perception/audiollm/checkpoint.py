"""Saving and loading the parts of a dual-encoder model that training changes.

A checkpoint folder holds ``config.json`` (:class:`DualEncoderConfig`) and ``trainable.safetensors``:
the adapters, the paralinguistic tower (when it trains), the semantic tower (only when configured
trainable), the LoRA weights and the aux head, with their buffers (e.g. BatchNorm statistics). The frozen
base LM and frozen encoders are rebuilt from the config, so a checkpoint of the default model is a few MB.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from perception.audiollm.configuration import DualEncoderConfig

WEIGHTS_NAME = "trainable.safetensors"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state entries (parameters and buffers) of the parts training changes."""
    config: DualEncoderConfig = model.config  # type: ignore[assignment]
    prefixes = ["semantic_projector.", "paralinguistic_projector.", "aux_head."]
    if config.paralinguistic.trainable:
        prefixes.append("paralinguistic_tower.")
    if config.semantic.trainable:
        prefixes.append("semantic_tower.")
    state = model.state_dict()
    return {
        name: tensor.detach().contiguous().clone()
        for name, tensor in state.items()
        if name.startswith(tuple(prefixes)) or ("lora_" in name and name.startswith("language_model."))
    }


def save_trainable(model: nn.Module, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)  # type: ignore[union-attr]
    save_file(trainable_state_dict(model), str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def load_weights_into(model: nn.Module, directory: str | Path) -> None:
    """Load ``trainable.safetensors`` into ``model``; every saved tensor must find its place."""
    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    expected = set(trainable_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not fit the model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)


def load_matching_weights(model: nn.Module, directory: str | Path) -> list[str]:
    """Start ``model`` from another run's ``trainable.safetensors``: every saved tensor whose name and
    shape fit is loaded. Returns the trainable entries that start fresh (say, an aux head that now reads a
    wider input); a checkpoint none of whose tensors fit is a ``ValueError``."""
    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    own = trainable_state_dict(model)
    fitting = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not fitting:
        raise ValueError(f"no tensor of {directory} fits this model")
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def load_trainable(
    directory: str | Path, language_model: nn.Module | None = None, cache_dir: Path | None = None
):  # -> DualEncoderForEmotionReasoning
    from perception.audiollm.modeling import DualEncoderForEmotionReasoning, load_language_model

    config = DualEncoderConfig.load(directory)
    lm = language_model if language_model is not None else load_language_model(config, cache_dir)
    model = DualEncoderForEmotionReasoning(config, lm)
    load_weights_into(model, directory)
    model.eval()
    return model
