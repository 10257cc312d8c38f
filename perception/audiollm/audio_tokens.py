"""How audio enters the language model: the towers' states, projected to tokens and written over the
prompt's placeholders.

Owns :func:`embed_audio` (both streams through their tower and adapter, semantic first, with the per-clip
token counts the prompt was built with; optionally the towers' states pooled per clip, the MLP aux head's
input) and :func:`merge_audio` (one ``masked_scatter`` of those tokens into the input embeddings, after
checking that the placeholders and the projected frames agree).
"""

from __future__ import annotations

import torch
from torch import nn

from perception.audiollm.configuration import DualEncoderConfig, stacked_length


def _valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lengths.device)[None] < lengths[:, None]  # (B, size)


def embed_audio(
    model: nn.Module,
    semantic_features: torch.Tensor,
    paralinguistic_features: torch.Tensor,
    semantic_lengths: torch.Tensor | None = None,
    paralinguistic_lengths: torch.Tensor | None = None,
    return_pooled: bool = False,
    project: bool = True,
):
    """Projected audio tokens of a batch, flattened: ``(N, H)`` with N the sum over clips of semantic
    then paralinguistic tokens, and the per-clip counts ``(B, 2)``. With ``return_pooled`` also the
    towers' states pooled per clip, ``(B, 2 * (C_sem + C_para))`` (mean and std over valid frames).
    ``project=False`` (with ``return_pooled``) skips the adapters: ``(None, counts, pooled)``, all an
    MLP aux head needs. ``model``: a dual-encoder model (its towers and projectors)."""
    b = semantic_features.shape[0]
    device = semantic_features.device
    if semantic_lengths is None:
        semantic_lengths = torch.full((b,), semantic_features.shape[1], dtype=torch.long, device=device)
    if paralinguistic_lengths is None:
        paralinguistic_lengths = torch.full(
            (b,), paralinguistic_features.shape[-1], dtype=torch.long, device=device
        )
    streams, pooled = [], []
    for tower, projector, features, lengths in (
        (model.semantic_tower, model.semantic_projector, semantic_features, semantic_lengths),
        (
            model.paralinguistic_tower,
            model.paralinguistic_projector,
            paralinguistic_features,
            paralinguistic_lengths,
        ),
    ):
        states, frame_lengths = tower(features, lengths)  # (B, T', C), (B,)
        valid = _valid_mask(frame_lengths, states.shape[1])[..., None]  # (B, T', 1)
        states = states * valid  # padding -> 0
        if return_pooled:
            n = valid.sum(dim=1).clamp(min=1)  # (B, 1)
            mean = states.sum(dim=1) / n
            var = (((states - mean[:, None]) * valid) ** 2).sum(dim=1) / n
            pooled.append(torch.cat([mean, (var + 1e-6).sqrt()], dim=-1))
        counts = torch.tensor([stacked_length(int(n), projector.stack) for n in frame_lengths], device=device)
        streams.append((projector(states) if project else None, counts))  # (B, T'/k, H)
    (sem, n_sem), (para, n_para) = streams
    if not project:
        if not return_pooled:
            raise ValueError("embed_audio(project=False) returns only the pooled states: ask for them")
        return None, torch.stack([n_sem, n_para], dim=1), torch.cat(pooled, dim=-1)
    valid = torch.cat([_valid_mask(n_sem, sem.shape[1]), _valid_mask(n_para, para.shape[1])], dim=1)
    merged = torch.cat([sem, para], dim=1)  # (B, T_s + T_p, H), semantic first
    if return_pooled:
        return merged[valid], torch.stack([n_sem, n_para], dim=1), torch.cat(pooled, dim=-1)
    return merged[valid], torch.stack([n_sem, n_para], dim=1)  # (N, H), (B, 2)


def merge_audio(
    config: DualEncoderConfig, language_model: nn.Module, input_ids: torch.Tensor, audio: torch.Tensor
) -> torch.Tensor:
    """Input embeddings ``(B, L, H)`` of ``input_ids`` with the placeholders replaced by ``audio``
    ``(N, H)``; a ``ValueError`` when their numbers differ."""
    mask = input_ids == config.audio_token_id  # (B, L)
    n_placeholders, n_frames = int(mask.sum()), int(audio.shape[0])
    if n_placeholders != n_frames:
        raise ValueError(
            f"audio placeholder tokens ({n_placeholders}) do not match projected audio frames "
            f"({n_frames}); build prompts with the processor (audio_token_counts)"
        )
    embeds = language_model.get_input_embeddings()(input_ids)  # (B, L, H)
    return embeds.masked_scatter(mask[..., None].expand_as(embeds), audio.to(embeds.dtype))
