"""The dual-encoder AudioLLM: two audio towers, two adapters, a LoRA-adapted causal LM.

Audio enters the LM by placeholder. The prompt holds, per clip, ``n_sem + n_para`` audio tokens
(:func:`~perception.audiollm.configuration.audio_token_counts`); :meth:`forward` projects both streams,
concatenates them along the sequence (semantic first), checks that the number of placeholders equals the
number of projected frames and writes the frames into the input embeddings with one ``masked_scatter``.

    model = DualEncoderForEmotionReasoning.from_config(config, cache_dir=...)
    logits, loss = model(input_ids, attention_mask, semantic_features, paralinguistic_features,
                         labels=labels)  # DualEncoderOutput unpacks like nanoGPT's (logits, loss)

Saving writes only what training changes (adapters, paralinguistic tower, LoRA, aux head; see
:mod:`perception.audiollm.checkpoint`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perception.audiollm.configuration import DualEncoderConfig, stacked_length
from perception.audiollm.encoders import (
    FrameStackProjector,
    build_paralinguistic_tower,
    build_semantic_tower,
    tower_width,
)

IGNORE_INDEX = -100


@dataclass
class DualEncoderOutput:
    """One forward pass.

    ``logits``: ``(B, L, V)`` next-token logits. ``loss``: scalar LM loss (+ weighted aux loss) when labels
    were given. ``aux_logits``: ``(B, n_labels)`` of the auxiliary emotion head, when the model has one.
    ``audio_token_counts``: ``(B, 2)`` semantic and paralinguistic tokens per clip.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_logits: torch.Tensor | None = None
    audio_token_counts: torch.Tensor | None = None

    def __iter__(self):  # ``logits, loss = model(...)``
        return iter((self.logits, self.loss))


def resolve_language_model(source: str, cache_dir: Path | None = None) -> str:
    """Path or hub id of the LM: the bundled SmolLM2 is converted once by :mod:`perception.bundled_lm`."""
    from perception.bundled_lm import BUNDLED_MODEL, convert_bundled_model

    if source == BUNDLED_MODEL:
        from perception.config import default_cache_dir

        return str(convert_bundled_model(cache_dir or default_cache_dir()))
    return source


def load_language_model(config: DualEncoderConfig, cache_dir: Path | None = None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    path = resolve_language_model(config.language_model, cache_dir)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lengths.device)[None] < lengths[:, None]  # (B, size)


def _build_aux_head(config: DualEncoderConfig, hidden: int, tower_widths: tuple[int, int]) -> nn.Module:
    """Linear over the mean audio token (``aux_hidden=0``), else an MLP over both towers' states pooled
    over the turn (mean and std per dimension) and the turn's utterance descriptors (``utterance_size``: the
    eGeMAPS functionals and pooled intermediate Whisper layers), standardised per
    feature by a BatchNorm: the utterance-level statistics emotion recognisers have long relied on, from
    the same states the adapters project and the descriptors the evidence cites."""
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


def aux_cross_entropy(aux_logits: torch.Tensor, emotion_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the aux head: for an ensemble in training, ``(K, B, n)``, the mean of its heads'."""
    if aux_logits.dim() == 3:
        k = aux_logits.shape[0]
        return F.cross_entropy(
            aux_logits.float().flatten(0, 1), emotion_labels.repeat(k), ignore_index=IGNORE_INDEX
        )
    return F.cross_entropy(aux_logits.float(), emotion_labels, ignore_index=IGNORE_INDEX)


class DualEncoderForEmotionReasoning(nn.Module):
    """Semantic + paralinguistic audio towers feeding a causal LM through placeholder tokens."""

    def __init__(self, config: DualEncoderConfig, language_model: nn.Module) -> None:
        super().__init__()
        if config.audio_token_id is None:
            raise ValueError("config.audio_token_id is unset: build the processor first (it adds the token)")
        self.config = config
        self.semantic_tower = build_semantic_tower(config)
        self.paralinguistic_tower = build_paralinguistic_tower(config)
        hidden = int(language_model.config.hidden_size)
        self.semantic_projector = FrameStackProjector(
            tower_width(self.semantic_tower, config.semantic.hidden_size),
            config.semantic.stack,
            hidden,
            config.projector,
        )
        self.paralinguistic_projector = FrameStackProjector(
            tower_width(self.paralinguistic_tower, config.paralinguistic.hidden_size),
            config.paralinguistic.stack,
            hidden,
            config.projector,
        )
        widths = (
            tower_width(self.semantic_tower, config.semantic.hidden_size),
            tower_width(self.paralinguistic_tower, config.paralinguistic.hidden_size),
        )
        self.aux_head = _build_aux_head(config, hidden, widths) if config.aux_head else None
        self.language_model = self._prepare_language_model(language_model)
        self.freeze_pretrained()

    @classmethod
    def from_config(
        cls, config: DualEncoderConfig, cache_dir: Path | None = None
    ) -> DualEncoderForEmotionReasoning:
        return cls(config, load_language_model(config, cache_dir))

    def _prepare_language_model(self, lm: nn.Module) -> nn.Module:
        token_id = int(self.config.audio_token_id)  # type: ignore[arg-type]
        vocab = lm.get_input_embeddings().weight.shape[0]
        if token_id >= vocab:  # the placeholder was added to the tokenizer: grow the vocabulary
            lm.resize_token_embeddings(token_id + 1, mean_resizing=False)
            with torch.no_grad():  # deterministic rows (never read as input: overwritten by audio)
                lm.get_input_embeddings().weight[vocab:] = 0.0
                out = lm.get_output_embeddings()
                if out is not None and out.weight.data_ptr() != lm.get_input_embeddings().weight.data_ptr():
                    out.weight[vocab:] = 0.0
        for p in lm.parameters():
            p.requires_grad_(False)
        if self.config.lora.r > 0:
            from peft import LoraConfig, get_peft_model

            lora = self.config.lora
            peft_config = LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            )
            lm = get_peft_model(lm, peft_config)
        return lm

    def freeze_pretrained(self) -> None:
        """Pretrained encoders stay frozen unless their config says ``trainable``."""
        if not self.config.semantic.trainable:
            self.semantic_tower.requires_grad_(False)
        if not self.config.paralinguistic.trainable:
            self.paralinguistic_tower.requires_grad_(False)

    # -- audio ----------------------------------------------------------------------------------------
    def embed_audio(
        self,
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
        MLP aux head needs."""
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
            (self.semantic_tower, self.semantic_projector, semantic_features, semantic_lengths),
            (
                self.paralinguistic_tower,
                self.paralinguistic_projector,
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
            counts = torch.tensor(
                [stacked_length(int(n), projector.stack) for n in frame_lengths], device=device
            )
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

    @property
    def uses_acoustic(self) -> bool:
        """Whether the aux head reads ``acoustic_features`` (``(B, config.utterance_size)``)."""
        return self.aux_head is not None and bool(self.config.utterance_size)

    def _aux_logits(
        self,
        audio: torch.Tensor,
        counts: torch.Tensor,
        pooled_states: torch.Tensor | None = None,
        acoustic_features: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        if self.aux_head is None:
            return None
        if not self.config.aux_hidden:
            per_clip = torch.split(audio, counts.sum(dim=1).tolist())
            pooled = torch.stack([chunk.mean(dim=0) for chunk in per_clip])  # (B, H)
            return self.aux_head(pooled)  # (B, n_labels)
        if pooled_states is None:
            raise ValueError(
                "the MLP aux head reads the towers' pooled states (embed_audio(return_pooled=True))"
            )
        if self.uses_acoustic:
            expected = (pooled_states.shape[0], self.config.utterance_size)
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
        return self.aux_head(pooled_states)  # (B, n_labels)

    def _aux_from_inputs(
        self,
        semantic_features: torch.Tensor,
        paralinguistic_features: torch.Tensor,
        semantic_lengths: torch.Tensor | None,
        paralinguistic_lengths: torch.Tensor | None,
        acoustic_features: torch.Tensor | None = None,
        project: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``(audio tokens, counts, aux logits)`` from one pass over the towers. ``project=False``: the
        aux logits only (no adapter pass, audio tokens ``None``) when the aux head is the MLP."""
        pooled = None
        if self.aux_head is not None and self.config.aux_hidden:
            audio, counts, pooled = self.embed_audio(
                semantic_features,
                paralinguistic_features,
                semantic_lengths,
                paralinguistic_lengths,
                True,
                project,
            )
        else:
            audio, counts = self.embed_audio(
                semantic_features, paralinguistic_features, semantic_lengths, paralinguistic_lengths
            )
        return audio, counts, self._aux_logits(audio, counts, pooled, acoustic_features)

    def emotion_logits(
        self,
        semantic_features: torch.Tensor,
        paralinguistic_features: torch.Tensor,
        semantic_lengths: torch.Tensor | None = None,
        paralinguistic_lengths: torch.Tensor | None = None,
        acoustic_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The aux head's ``(B, n_labels)`` logits from the audio alone (no LM pass)."""
        if self.aux_head is None:
            raise ValueError("this model has no aux head (config.aux_head=False)")
        return self._aux_from_inputs(  # type: ignore[return-value]
            semantic_features,
            paralinguistic_features,
            semantic_lengths,
            paralinguistic_lengths,
            acoustic_features,
            project=False,
        )[2]

    def aux_loss(self, emotion_labels: torch.Tensor, **batch: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the aux head alone: the cheap emotion objective (``forward(aux_only=True)``)."""
        return self(**batch, emotion_labels=emotion_labels, aux_only=True).loss

    def merge_audio(self, input_ids: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``(B, L, H)`` with the placeholders replaced by ``audio`` ``(N, H)``."""
        mask = input_ids == self.config.audio_token_id  # (B, L)
        n_placeholders, n_frames = int(mask.sum()), int(audio.shape[0])
        if n_placeholders != n_frames:
            raise ValueError(
                f"audio placeholder tokens ({n_placeholders}) do not match projected audio frames "
                f"({n_frames}); build prompts with the processor (audio_token_counts)"
            )
        embeds = self.language_model.get_input_embeddings()(input_ids)  # (B, L, H)
        return embeds.masked_scatter(mask[..., None].expand_as(embeds), audio.to(embeds.dtype))

    # -- forward --------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        semantic_features: torch.Tensor,
        paralinguistic_features: torch.Tensor,
        labels: torch.Tensor | None = None,
        semantic_lengths: torch.Tensor | None = None,
        paralinguistic_lengths: torch.Tensor | None = None,
        emotion_labels: torch.Tensor | None = None,
        aux_only: bool = False,
        acoustic_features: torch.Tensor | None = None,
    ) -> DualEncoderOutput:
        """``labels``: ``(B, L)`` token targets (-100 where ignored; shifted inside). ``emotion_labels``:
        ``(B,)`` indices into ``config.labels`` (-100 for clips without one) for the aux head.
        ``aux_only``: skip the LM; ``loss`` is the aux head's cross-entropy and ``logits`` its logits (the
        ``emotion-aux`` phase, run through the same call so data-parallel wrappers sync its gradients).
        ``acoustic_features``: ``(B, config.utterance_size)`` for an aux head that reads them."""
        audio, counts, aux_logits = self._aux_from_inputs(
            semantic_features,
            paralinguistic_features,
            semantic_lengths,
            paralinguistic_lengths,
            acoustic_features,
            project=not aux_only,
        )
        if aux_only:
            if aux_logits is None or emotion_labels is None:
                raise ValueError("aux_only needs a model with an aux head and emotion_labels")
            loss = aux_cross_entropy(aux_logits, emotion_labels)
            return DualEncoderOutput(aux_logits, loss, aux_logits, counts)
        embeds = self.merge_audio(input_ids, audio)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: same positions
        logits = self.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids
        ).logits  # (B, L, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
            if aux_logits is not None and emotion_labels is not None and (emotion_labels >= 0).any():
                aux = aux_cross_entropy(aux_logits, emotion_labels)
                loss = loss + self.config.aux_loss_weight * aux
        return DualEncoderOutput(logits, loss, aux_logits, counts)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        semantic_features: torch.Tensor,
        paralinguistic_features: torch.Tensor,
        semantic_lengths: torch.Tensor | None = None,
        paralinguistic_lengths: torch.Tensor | None = None,
        acoustic_features: torch.Tensor | None = None,  # read by the aux head only; accepted with the batch
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids ``(B, n_new)`` after the (left-padded) prompts; greedy unless told otherwise."""
        audio, _ = self.embed_audio(
            semantic_features, paralinguistic_features, semantic_lengths, paralinguistic_lengths
        )
        embeds = self.merge_audio(input_ids, audio)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("max_new_tokens", 64)
        generate_kwargs.setdefault("suppress_tokens", [int(self.config.audio_token_id)])  # type: ignore[arg-type]
        return self.language_model.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
        )

    @torch.no_grad()
    def label_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        semantic_features: torch.Tensor,
        paralinguistic_features: torch.Tensor,
        label_token_ids: list[list[int]] | None = None,
        semantic_lengths: torch.Tensor | None = None,
        paralinguistic_lengths: torch.Tensor | None = None,
        source: str | None = None,
        acoustic_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-label probabilities ``(B, n_labels)`` (rows sum to 1); see :mod:`.scoring`."""
        from perception.audiollm.scoring import label_scores

        return label_scores(
            self,
            input_ids,
            attention_mask,
            semantic_features,
            paralinguistic_features,
            label_token_ids,
            semantic_lengths,
            paralinguistic_lengths,
            source or self.config.score_source,
            acoustic_features=acoustic_features,
        )

    def merge_lora(self) -> None:
        """Fold the LoRA weights into the LM (for inference: the same outputs, fewer operations per token).
        The model can no longer be trained or saved afterwards."""
        merge = getattr(self.language_model, "merge_and_unload", None)
        if merge is not None:
            self.language_model = merge()
            self._merged = True

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``trainable.safetensors`` (only what training changes)."""
        if getattr(self, "_merged", False):
            raise ValueError("this model's LoRA was merged for inference; save the model before merge_lora()")
        from perception.audiollm.checkpoint import save_trainable

        return save_trainable(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, language_model: nn.Module | None = None, cache_dir: Path | None = None
    ) -> DualEncoderForEmotionReasoning:
        """Rebuild from a saved folder: the base LM from ``config.language_model`` (or the one given),
        then the trained parts on top."""
        from perception.audiollm.checkpoint import load_trainable

        return load_trainable(directory, language_model=language_model, cache_dir=cache_dir)

    def module_groups(self) -> dict[str, list[nn.Module]]:
        """Modules by the groups the training schedule switches on and off (``lora``: the LM holding the
        adapters)."""
        return {
            "semantic": [self.semantic_projector]
            + ([self.semantic_tower] if self.config.semantic.trainable else []),
            "paralinguistic": [self.paralinguistic_projector]
            + ([self.paralinguistic_tower] if self.config.paralinguistic.trainable else []),
            "lora": [self.language_model],
            "aux_head": [self.aux_head] if self.aux_head is not None else [],
        }

    def train_groups_only(self, groups: tuple[str, ...] | list[str]) -> None:
        """Training mode for the modules of ``groups`` only; every other module in eval mode (no
        dropout, fixed normalisation statistics), as frozen encoders under a probe."""
        modules = self.module_groups()
        self.eval()
        for name in groups:
            for module in modules[name]:
                module.train()

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by the groups the training schedule switches on and off (of the LM, LoRA's only)."""
        return {
            name: [
                p
                for module in modules
                for n, p in module.named_parameters()
                if name != "lora" or "lora_" in n
            ]
            for name, modules in self.module_groups().items()
        }
