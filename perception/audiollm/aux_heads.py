"""The auxiliary emotion heads of the dual-encoder model: what decides the label by default.

Owns building the head (:func:`build_aux_head`: linear over the mean audio token, an MLP over the towers'
pooled states and the turn's utterance descriptors, or an ensemble of such MLPs), running it
(:func:`run_aux_head`) and its loss (:func:`aux_cross_entropy`). None of it needs the language model: with
``score_source="aux"`` a turn's scores come from the towers and this head alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from perception.audiollm.configuration import DualEncoderConfig

IGNORE_INDEX = -100  # targets (tokens, emotion labels) that carry no loss


def build_aux_head(config: DualEncoderConfig, hidden: int, tower_widths: tuple[int, int]) -> nn.Module:
    """Linear over the mean audio token (``aux_hidden=0``; ``hidden`` is the LM's width the adapters
    project to), else an MLP over both towers' states pooled over the turn (mean and std per dimension) and
    the turn's utterance descriptors (``utterance_size``: the eGeMAPS functionals and pooled intermediate
    Whisper layers), standardised per feature by a BatchNorm: the utterance-level statistics emotion
    recognisers have long relied on, from the same states the adapters project and the descriptors the
    evidence cites."""
    if not config.aux_hidden:
        return nn.Linear(hidden, len(config.labels))
    width = 2 * sum(tower_widths) + config.utterance_size

    def mlp() -> nn.Module:
        return nn.Sequential(
            nn.BatchNorm1d(width),
            nn.Dropout(0.2),
            nn.Linear(width, config.aux_hidden),
            nn.GELU(),
            nn.Dropout(0.5),
            nn.Linear(config.aux_hidden, len(config.labels)),
        )

    if config.aux_heads > 1:
        return AuxHeadEnsemble([mlp() for _ in range(config.aux_heads)])
    return mlp()


class AuxHeadEnsemble(nn.Module):
    """``config.aux_heads`` heads over the same input. In training mode the logits of every head,
    ``(K, B, n_labels)``, so each is fitted with its own loss (:func:`aux_cross_entropy`); otherwise the log
    of their mean probability, ``(B, n_labels)``, whose softmax is the ensemble's distribution."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([head(x) for head in self.heads])  # (K, B, n)
        if self.training:
            return logits
        return torch.logsumexp(F.log_softmax(logits.float(), dim=-1), dim=0) - math.log(len(self.heads))


def reads_acoustic(config: DualEncoderConfig) -> bool:
    """Whether the head reads ``acoustic_features`` (``(B, config.utterance_size)``)."""
    return config.aux_head and bool(config.utterance_size)


def run_aux_head(
    head: nn.Module,
    config: DualEncoderConfig,
    audio: torch.Tensor | None,
    counts: torch.Tensor,
    pooled_states: torch.Tensor | None = None,
    acoustic_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, n_labels)`` logits (``(K, B, n_labels)`` for an ensemble in training). The linear head reads
    the projected audio tokens ``audio`` ``(N, H)`` split per clip by ``counts`` ``(B, 2)``; the MLP the
    towers' ``pooled_states`` ``(B, 2 * (C_sem + C_para))`` and, when it reads them, the utterance
    descriptors."""
    if not config.aux_hidden:
        if audio is None:
            raise ValueError("the linear aux head reads the projected audio tokens")
        per_clip = torch.split(audio, counts.sum(dim=1).tolist())
        pooled = torch.stack([chunk.mean(dim=0) for chunk in per_clip])  # (B, H)
        return head(pooled)
    if pooled_states is None:
        raise ValueError("the MLP aux head reads the towers' pooled states (embed_audio(return_pooled=True))")
    if reads_acoustic(config):
        expected = (pooled_states.shape[0], config.utterance_size)
        if acoustic_features is None:
            raise ValueError(
                f"this model's aux head reads acoustic_features of shape {expected} "
                "(the turn's utterance descriptors; the processor adds them when encode() gets acoustic=)"
            )
        if tuple(acoustic_features.shape) != expected:
            raise ValueError(
                f"acoustic_features has shape {tuple(acoustic_features.shape)}, expected {expected}"
            )
        pooled_states = torch.cat([pooled_states, acoustic_features.to(pooled_states.dtype)], dim=-1)
    return head(pooled_states)


def aux_cross_entropy(aux_logits: torch.Tensor, emotion_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the aux head: for an ensemble in training, ``(K, B, n)``, the mean of its heads'."""
    if aux_logits.dim() == 3:
        k = aux_logits.shape[0]
        return F.cross_entropy(
            aux_logits.float().flatten(0, 1), emotion_labels.repeat(k), ignore_index=IGNORE_INDEX
        )
    return F.cross_entropy(aux_logits.float(), emotion_labels, ignore_index=IGNORE_INDEX)
