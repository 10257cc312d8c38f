"""Per-label probabilities from the dual-encoder model itself.

Two sources, chosen by ``config.score_source`` (or per call):

* ``"lm"`` (default): label-token likelihoods at the answer position. For each label the prompt (the
  ``emotion`` task's, ending at the assistant turn) is extended by the label's tokens and their log-probs
  summed; a softmax over labels gives ``P(label | audio, answer is a label)``. These are the scores of
  the very distribution :meth:`generate` samples the answer from, so the reported label and its score
  agree, and multi-token labels are handled exactly.
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
) -> torch.Tensor:
    """``(B, n_labels)`` probabilities. ``input_ids`` are left-padded ``emotion`` prompts (no answer)."""
    audio, counts = model.embed_audio(
        semantic_features, paralinguistic_features, semantic_lengths, paralinguistic_lengths
    )
    if source == "aux":
        logits = model._aux_logits(audio, counts)
        if logits is None:
            raise ValueError("score_source 'aux' needs a model built with aux_head=True")
        return logits.float().softmax(dim=-1)
    if source != "lm":
        raise ValueError(f"unknown score source {source!r} (known: lm, aux)")
    if not label_token_ids:
        raise ValueError("label-likelihood scoring needs the labels' token ids (processor.label_token_ids())")
    prompt_embeds = model.merge_audio(input_ids, audio)  # (B, L, H)
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
