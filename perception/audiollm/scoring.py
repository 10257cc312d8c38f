"""Per-label probabilities from the dual-encoder model itself.

Two sources, chosen by ``config.score_source`` (or per call):

* ``"lm"`` (default): label-token likelihoods at the answer position. For each label the prompt (the
  ``emotion`` task's, ending at the assistant turn) is extended by the label's tokens and their log-probs
  summed; a softmax over labels gives ``P(label | audio, answer is a label)``. These are the scores of
  the very distribution :meth:`generate` samples the answer from, so the reported label and its score
  agree, and multi-token labels are handled exactly. The prompt runs once; the label continuations
  reuse its KV cache in one batched pass.
* ``"aux"``: the softmax of the auxiliary emotion head over pooled audio tokens: one pass, no LM, but
  only as good as the head's training (it trains jointly when ``aux_loss_weight > 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def label_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    semantic_features: torch.Tensor,
    paralinguistic_features: torch.Tensor,
    label_token_ids: list[list[int]] | None,
    semantic_lengths: torch.Tensor | None = None,
    paralinguistic_lengths: torch.Tensor | None = None,
    source: str = "lm",
    single_pass: bool = True,
    acoustic_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, n_labels)`` probabilities. ``input_ids`` are left-padded ``emotion`` prompts (no answer)."""
    if source == "aux":
        if model.aux_head is None:
            raise ValueError("score_source 'aux' needs a model built with aux_head=True")
        logits = model.emotion_logits(
            semantic_features,
            paralinguistic_features,
            semantic_lengths,
            paralinguistic_lengths,
            acoustic_features,
        )
        return logits.float().softmax(dim=-1)
    audio, _ = model.embed_audio(
        semantic_features, paralinguistic_features, semantic_lengths, paralinguistic_lengths
    )
    if source != "lm":
        raise ValueError(f"unknown score source {source!r} (known: lm, aux)")
    if not label_token_ids:
        raise ValueError("label-likelihood scoring needs the labels' token ids (processor.label_token_ids())")
    prompt_embeds = model.merge_audio(input_ids, audio)  # (B, L, H)
    if single_pass:
        return _scores_with_cache(model, prompt_embeds, attention_mask, label_token_ids)
    embedding = model.language_model.get_input_embeddings()
    b, length = input_ids.shape
    totals = []
    for ids in label_token_ids:
        answer = torch.tensor(ids, dtype=torch.long, device=input_ids.device)[None].expand(b, -1)  # (B, A)
        embeds = torch.cat([prompt_embeds, embedding(answer)], dim=1)  # (B, L + A, H)
        mask = torch.cat([attention_mask, torch.ones_like(answer)], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions
        ).logits
        # token j of the answer is predicted at position L - 1 + j
        logp = F.log_softmax(logits[:, length - 1 : length - 1 + len(ids)].float(), dim=-1)  # (B, A, V)
        totals.append(logp.gather(-1, answer[..., None]).squeeze(-1).sum(dim=-1))  # (B,)
    return torch.stack(totals, dim=1).softmax(dim=-1)  # (B, n_labels)


def _scores_with_cache(
    model: nn.Module,
    prompt_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    label_token_ids: list[list[int]],
) -> torch.Tensor:
    """The prompt runs once; its KV cache is repeated per label and all label continuations run in one
    batched pass (right-padded: later padding cannot affect earlier positions of a causal LM)."""
    lm = model.language_model
    b, n, width = prompt_embeds.shape[0], len(label_token_ids), max(len(ids) for ids in label_token_ids)
    device = prompt_embeds.device
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = lm(
        inputs_embeds=prompt_embeds, attention_mask=attention_mask, position_ids=positions, use_cache=True
    )
    first = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): each label's first token
    ids = torch.zeros((n, width), dtype=torch.long, device=device)
    valid = torch.zeros((n, width), dtype=torch.bool, device=device)
    for i, label_ids in enumerate(label_token_ids):
        ids[i, : len(label_ids)] = torch.tensor(label_ids, device=device)
        valid[i, : len(label_ids)] = True
    totals = first[:, ids[:, 0]]  # (B, n)
    if width > 1:
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)  # (B*n) rows: clip-major, label-minor
        answer = ids.repeat(b, 1)  # (B*n, A)
        mask = torch.cat([attention_mask.repeat_interleave(n, dim=0), torch.ones_like(answer)], dim=1)
        pos = positions[:, -1:].repeat_interleave(n, dim=0) + 1 + torch.arange(width, device=device)[None]
        logits = lm(
            inputs_embeds=lm.get_input_embeddings()(answer),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
        ).logits  # (B*n, A, V): position j predicts answer token j + 1
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, answer[:, 1:, None]).squeeze(-1)
        totals = totals + (logp * valid[:, 1:].repeat(b, 1)).sum(dim=-1).view(b, n)
    return totals.softmax(dim=-1)  # (B, n_labels)
