"""The two audio towers and their MLP adapters.

Owns:

* :class:`PrecomputedStates` (semantic ``whisper-ct2``): the identity over Whisper encoder states that
  CTranslate2 computed outside torch (frozen by construction, cacheable per clip).
* :class:`HFWhisperTower` (semantic ``whisper-hf``): a transformers ``WhisperEncoder`` over log-mel.
* :class:`MelCNNEncoder` (paralinguistic ``mel-cnn``): two stride-2 convolutions + a small transformer over
  log-mel; small enough to train on a CPU.
* :class:`HFAudioTower` (paralinguistic ``hf``): any transformers waveform encoder (WavLM, HuBERT,
  emotion2vec ports).
* :class:`FrameStackProjector`: stacks ``k`` consecutive frames into one and maps them to the LM's
  hidden size with a 2-layer MLP (the adapter of each branch).

Every tower maps ``(features, lengths) -> (states (B, T', C), frame_lengths (B,))``; frame lengths come
from :mod:`perception.audiollm.configuration`'s helpers, never recomputed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from perception.audiollm.configuration import (
    DualEncoderConfig,
    ParalinguisticEncoderConfig,
    ProjectorConfig,
    paralinguistic_frames,
    semantic_frames,
)


def _lengths_tensor(fn, config: DualEncoderConfig, lengths: torch.Tensor) -> torch.Tensor:
    return torch.tensor([fn(config, int(n)) for n in lengths], dtype=torch.long, device=lengths.device)


class PrecomputedStates(nn.Module):
    """Semantic tower for ``whisper-ct2``: the features already are encoder states ``(B, T, C)``."""

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return features, _lengths_tensor(semantic_frames, self.config, lengths)


class HFWhisperTower(nn.Module):
    """Semantic tower for ``whisper-hf``: transformers' WhisperEncoder over log-mel ``(B, n_mels, T)``.

    Whisper's encoder only accepts its full 30 s window, so input is padded to it and the states are
    trimmed back to the frames covering the audio.
    """

    def __init__(self, config: DualEncoderConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if encoder is None:
            from transformers import WhisperModel

            encoder = WhisperModel.from_pretrained(config.semantic.name).get_encoder()
        self.encoder = encoder
        self.window = int(encoder.config.max_source_positions) * 2

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.window - features.shape[-1]
        mel = F.pad(features, (0, pad)) if pad > 0 else features[..., : self.window]
        states = self.encoder(input_features=mel).last_hidden_state  # (B, 1500, C)
        frame_lengths = _lengths_tensor(semantic_frames, self.config, lengths)
        return states[:, : int(frame_lengths.max())], frame_lengths


class MelCNNEncoder(nn.Module):
    """Paralinguistic tower for ``mel-cnn``: log-mel ``(B, n_mels, T)`` -> states ``(B, ~T/4, C)``."""

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        self.config = config
        p: ParalinguisticEncoderConfig = config.paralinguistic
        self.input_norm = nn.BatchNorm1d(p.n_mels)  # log-mel scale differs per corpus/microphone
        self.conv1 = nn.Conv1d(p.n_mels, p.hidden_size, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(p.hidden_size, p.hidden_size, kernel_size=3, stride=2, padding=1)
        layer = nn.TransformerEncoderLayer(
            p.hidden_size,
            p.num_heads,
            dim_feedforward=2 * p.hidden_size,
            dropout=p.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, p.num_layers, enable_nested_tensor=False)
        self.max_positions = int(config.max_audio_seconds * 25) + 8
        self.position = nn.Embedding(self.max_positions, p.hidden_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.gelu(self.conv1(self.input_norm(features)))  # (B, C, T/2)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T/4, C)
        x = x[:, : self.max_positions]
        frame_lengths = _lengths_tensor(paralinguistic_frames, self.config, lengths).clamp(max=x.shape[1])
        x = x + self.position(torch.arange(x.shape[1], device=x.device))[None]
        padding = torch.arange(x.shape[1], device=x.device)[None] >= frame_lengths[:, None]  # (B, T')
        return self.transformer(x, src_key_padding_mask=padding), frame_lengths


class HFAudioTower(nn.Module):
    """Paralinguistic tower for ``hf``: a transformers waveform encoder over ``(B, samples)`` at 16 kHz."""

    def __init__(self, config: DualEncoderConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if encoder is None:
            from transformers import AutoModel

            encoder = AutoModel.from_pretrained(config.paralinguistic.name)
        self.encoder = encoder

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(features.shape[1], device=features.device)[None] < lengths[:, None]).long()
        states = self.encoder(input_values=features, attention_mask=mask).last_hidden_state  # (B, T', C)
        return states, _lengths_tensor(paralinguistic_frames, self.config, lengths).clamp(max=states.shape[1])


def tower_width(module: nn.Module, default: int) -> int:
    """Hidden size of a tower's output (from its encoder config when it wraps a transformers model)."""
    encoder = getattr(module, "encoder", None)
    cfg = getattr(encoder, "config", None)
    return int(getattr(cfg, "d_model", None) or getattr(cfg, "hidden_size", None) or default)


class FrameStackProjector(nn.Module):
    """Adapter: ``(B, T, C)`` -> stack ``k`` frames -> ``(B, ceil(T/k), k*C)`` -> MLP -> ``(B, T/k, H)``."""

    def __init__(self, in_size: int, stack: int, out_size: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.stack = stack
        self.norm = nn.LayerNorm(in_size * stack)
        self.fc1 = nn.Linear(in_size * stack, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, out_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b, t, c = states.shape
        pad = (-t) % self.stack
        x = F.pad(states, (0, 0, 0, pad)).reshape(b, (t + pad) // self.stack, c * self.stack)  # (B, T/k, kC)
        return self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x)))))  # (B, T/k, H)


def build_semantic_tower(config: DualEncoderConfig) -> nn.Module:
    if config.semantic.kind == "whisper-hf":
        return HFWhisperTower(config)
    return PrecomputedStates(config)


def build_paralinguistic_tower(config: DualEncoderConfig) -> nn.Module:
    if config.paralinguistic.kind == "hf":
        return HFAudioTower(config)
    return MelCNNEncoder(config)
