"""Saving and loading the parts of a dual-encoder model that training changes.

A checkpoint folder holds ``config.json`` (:class:`DualEncoderConfig`) and ``trainable.safetensors``:
the adapters, the paralinguistic tower (when it trains), the semantic tower (only when configured
trainable), the LoRA weights and the aux head, with their buffers (e.g. BatchNorm statistics). The frozen
base LM and frozen encoders are rebuilt from the config, so a checkpoint of the default model is a few MB.

A model for aux-head scores only is loaded without its LM (``load_trainable(with_language_model=False)``:
the adapters' width is read from the saved adapters, the LoRA tensors stay in the file) and can be given
its LM and LoRA later (:func:`attach_language_model`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from perception.audiollm.configuration import DualEncoderConfig

WEIGHTS_NAME = "trainable.safetensors"
LM_PREFIX = "language_model."


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
        if name.startswith(tuple(prefixes)) or ("lora_" in name and name.startswith(LM_PREFIX))
    }


def save_trainable(model: nn.Module, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)  # type: ignore[union-attr]
    save_file(trainable_state_dict(model), str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def load_weights_into(
    model: nn.Module, directory: str | Path, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Load ``trainable.safetensors`` (or its ``state``, already read) into ``model``; every saved tensor
    must find its place. A model without its LM takes everything but the LoRA tensors."""
    if state is None:
        state = load_file(str(Path(directory) / WEIGHTS_NAME))
    if getattr(model, "language_model", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith(LM_PREFIX)}
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
    directory: str | Path,
    language_model: nn.Module | None = None,
    cache_dir: Path | None = None,
    *,
    with_language_model: bool = True,
):  # -> DualEncoderForEmotionReasoning
    """The saved model in eval mode. ``with_language_model=False``: towers, adapters and aux head only
    (the base LM is neither loaded nor needed; ``language_model`` is ignored)."""
    from perception.audiollm.modeling import DualEncoderForEmotionReasoning, load_language_model

    config = DualEncoderConfig.load(directory)
    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    if with_language_model:
        lm = language_model if language_model is not None else load_language_model(config, cache_dir)
        model = DualEncoderForEmotionReasoning(config, lm)
    else:
        model = DualEncoderForEmotionReasoning(config, hidden_size=adapter_width(state, directory))
    load_weights_into(model, directory, state)
    model.eval()
    return model


def adapter_width(state: dict[str, torch.Tensor], directory: str | Path) -> int:
    """The LM width the saved adapters project to (the rows of the semantic adapter's last layer)."""
    weight = state.get("semantic_projector.fc2.weight")
    if weight is None:
        raise ValueError(f"checkpoint {directory} holds no semantic adapter (semantic_projector.fc2)")
    return int(weight.shape[0])


def attach_language_model(
    model: nn.Module,
    directory: str | Path,
    language_model: nn.Module | None = None,
    cache_dir: Path | None = None,
) -> None:
    """Give a model loaded without its LM the base LM (``language_model`` or the one its config names)
    and the LoRA weights saved in ``directory``; the model stays in eval mode."""
    from perception.audiollm.modeling import load_language_model

    lm = language_model if language_model is not None else load_language_model(model.config, cache_dir)
    model.attach_language_model(lm)  # type: ignore[operator]
    with safe_open(str(Path(directory) / WEIGHTS_NAME), framework="pt") as weights:
        saved = {k: weights.get_tensor(k) for k in weights.keys() if k.startswith(LM_PREFIX)}
    expected = {k for k in trainable_state_dict(model) if k.startswith(LM_PREFIX)}
    if set(saved) != expected:
        missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise ValueError(
            f"checkpoint {directory} does not fit the language model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(saved, strict=False)
    model.eval()
