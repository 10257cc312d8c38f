"""Pooled states of a Whisper encoder's intermediate layers, for the aux head.

Emotion is heard best part-way up Whisper's encoder, before the last blocks specialise in what the decoder
needs to write words. On CREMA-D actors held out from training, a logistic regression over
speaker-normalised mean + std pooled states reaches UA 0.769 from tiny.en's second block and 0.725 from its
final layer (``python -m bench.audiollm``; docs/audiollm.md, "How the figure was reached"). The CTranslate2
runtime that decodes speech returns the final layer only, so the blocks up to the deepest layer asked for
run again in torch, from the same weights: :func:`read_ctranslate2` reads the CTranslate2 ``model.bin`` and
:func:`encoder_from_ctranslate2` loads it into transformers' ``WhisperEncoder``. A ``whisper-hf`` run's own
encoder serves the same way.

Layer ``0`` is the input of the first block (convolutions + positions), layer ``k`` the output of block
``k``. Pooling is over the turn's frames: the mean, then the standard deviation, per dimension.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

# CTranslate2's DataType enum (include/ctranslate2/types.h), by type id
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ctranslate2(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` (binary format 6), by name, aliases resolved.

    CTranslate2 writes these files but has no API to read the weights back; the layout is its
    ``ModelSpec._serialize``: version, spec name, revision, then (name, rank, shape, type id, byte count,
    bytes) per variable and (alias, target) pairs."""
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:

        def unpack(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(unpack("H"))[:-1].decode("utf-8")

        version = unpack("I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 binary version {version}, this reader knows version 6")
        string(), unpack("I")  # spec name, revision
        for _ in range(unpack("I")):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype = _CT2_DTYPES.get(unpack("B"))
            raw = f.read(unpack("I"))
            if dtype is None:
                raise ValueError(f"{path}: variable {name} has an unknown type")
            if dtype == "bfloat16":
                values = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                values = np.frombuffer(raw, dtype)
            out[name] = values.reshape(shape)
        for _ in range(unpack("I")):
            alias, target = string(), string()
            out[alias] = out[target]
    return out


def encoder_from_ctranslate2(model_dir: str | Path):  # -> transformers WhisperEncoder
    """transformers' ``WhisperEncoder`` holding the encoder weights of a CTranslate2 Whisper model."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    weights = read_ctranslate2(Path(model_dir) / "model.bin")
    if "encoder/conv1/weight" not in weights:
        raise ValueError(f"{model_dir}: not a CTranslate2 Whisper model (no encoder/conv1)")
    if weights["encoder/layer_0/self_attention/linear_0/weight"].dtype == np.int8:
        raise ValueError(f"{model_dir}: int8-quantised weights; convert the model with float16 or float32")

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(weights[name], dtype=np.float32).copy())

    d_model = weights["encoder/conv1/weight"].shape[0]
    n_layers = sum(1 for k in weights if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    config = WhisperConfig(
        num_mel_bins=weights["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_layers,
        encoder_attention_heads=int(weights["encoder/num_heads"]),
        encoder_ffn_dim=weights["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=weights["encoder/position_encodings/encodings"].shape[0],
    )
    state = {
        "conv1.weight": tensor("encoder/conv1/weight"),
        "conv1.bias": tensor("encoder/conv1/bias"),
        "conv2.weight": tensor("encoder/conv2/weight"),
        "conv2.bias": tensor("encoder/conv2/bias"),
        "embed_positions.weight": tensor("encoder/position_encodings/encodings"),
        "layer_norm.weight": tensor("encoder/layer_norm/gamma"),
        "layer_norm.bias": tensor("encoder/layer_norm/beta"),
    }
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}/", f"layers.{i}."
        q, k, v = tensor(src + "self_attention/linear_0/weight").split(d_model)  # fused q, k, v
        qb, _, vb = tensor(src + "self_attention/linear_0/bias").split(d_model)  # Whisper's k has no bias
        state.update(
            {
                dst + "self_attn.q_proj.weight": q,
                dst + "self_attn.q_proj.bias": qb,
                dst + "self_attn.k_proj.weight": k,
                dst + "self_attn.v_proj.weight": v,
                dst + "self_attn.v_proj.bias": vb,
                dst + "self_attn.out_proj.weight": tensor(src + "self_attention/linear_1/weight"),
                dst + "self_attn.out_proj.bias": tensor(src + "self_attention/linear_1/bias"),
                dst + "self_attn_layer_norm.weight": tensor(src + "self_attention/layer_norm/gamma"),
                dst + "self_attn_layer_norm.bias": tensor(src + "self_attention/layer_norm/beta"),
                dst + "fc1.weight": tensor(src + "ffn/linear_0/weight"),
                dst + "fc1.bias": tensor(src + "ffn/linear_0/bias"),
                dst + "fc2.weight": tensor(src + "ffn/linear_1/weight"),
                dst + "fc2.bias": tensor(src + "ffn/linear_1/bias"),
                dst + "final_layer_norm.weight": tensor(src + "ffn/layer_norm/gamma"),
                dst + "final_layer_norm.bias": tensor(src + "ffn/layer_norm/beta"),
            }
        )
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


class WhisperLayerStats:
    """Mean + std pooled states of chosen encoder layers over a compact (unpadded) log-mel.

    ``stats(mel)`` -> ``(len(layers), 2 * d_model)``; ``vector(mel)`` is the same, flattened. Only the
    blocks up to the deepest chosen layer run. ``layers=None``: every layer, ``0..n_blocks``. Thread-safe."""

    def __init__(self, encoder, layers: Sequence[int] | None) -> None:
        self.encoder = encoder.eval()
        n_blocks = len(encoder.layers)
        self.layers = list(range(n_blocks + 1)) if layers is None else [int(i) for i in layers]
        bad = [i for i in self.layers if not 0 <= i <= n_blocks]
        if not self.layers or bad:
            raise ValueError(f"pooled layers must be in 0..{n_blocks} for this encoder, got {self.layers}")
        self.width = 2 * encoder.config.d_model
        self._lock = threading.Lock()

    @classmethod
    def for_whisper(
        cls, name: str, layers: Sequence[int] | None, cache_dir: Path | None = None
    ) -> WhisperLayerStats:
        """For a Whisper the ASR runtime loads (``tiny.en``, ``base``, a CTranslate2 directory): its
        ``model.bin`` read into torch; any other name is a transformers Whisper checkpoint."""
        from perception.asr import resolve_model

        path = Path(resolve_model(name, cache_dir))
        if (path / "model.bin").is_file():
            return cls(encoder_from_ctranslate2(path), layers)
        from transformers import WhisperModel

        return cls(WhisperModel.from_pretrained(str(path) if path.exists() else name).get_encoder(), layers)

    @torch.no_grad()
    def stats(self, mel: np.ndarray) -> np.ndarray:
        enc = self.encoder
        x = torch.as_tensor(np.asarray(mel, dtype=np.float32))[None]  # (1, n_mels, T)
        if x.shape[1] != enc.config.num_mel_bins or x.shape[2] < 2:
            raise ValueError(
                f"log-mel of shape {tuple(mel.shape)}: expected ({enc.config.num_mel_bins}, T >= 2)"
            )
        with self._lock:
            x = F.gelu(enc.conv1(x))
            x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (1, T/2, d)
            x = x[:, : enc.embed_positions.weight.shape[0]]
            x = x + enc.embed_positions.weight[: x.shape[1]]
            pooled = {0: x[0]}
            for i, layer in enumerate(enc.layers[: max(self.layers)], start=1):
                x = layer(x, attention_mask=None)
                x = x[0] if isinstance(x, tuple) else x
                pooled[i] = x[0]
        rows = [torch.cat([pooled[i].mean(0), pooled[i].std(0, unbiased=False)]) for i in self.layers]
        return torch.stack(rows).numpy().astype(np.float32)

    def vector(self, mel: np.ndarray) -> np.ndarray:
        return self.stats(mel).reshape(-1)
