"""The dual-encoder AudioLLM: two audio towers, two adapters, aux emotion heads, a LoRA-adapted causal LM.

Audio enters the LM by placeholder. The prompt holds, per clip, ``n_sem + n_para`` audio tokens
(:func:`~perception.audiollm.configuration.audio_token_counts`); :meth:`forward` projects both streams,
concatenates them along the sequence (semantic first), checks that the number of placeholders equals the
number of projected frames and writes the frames into the input embeddings with one ``masked_scatter``.

    model = DualEncoderForEmotionReasoning.from_config(config, cache_dir=...)
    logits, loss = model(input_ids, attention_mask, semantic_features, paralinguistic_features,
                         labels=labels)  # DualEncoderOutput unpacks like nanoGPT's (logits, loss)

Saving writes only what training changes (adapters, paralinguistic tower, LoRA, aux head; see
:mod:`perception.audiollm.checkpoint`). The aux heads live in :mod:`.aux_heads`, the LM's loading and LoRA in
:mod:`.language_model`. A model built without its LM (``language_model=None`` and the adapters'
``hidden_size``) has towers, adapters and aux heads only: enough for ``score_source="aux"`` scores; the LM
can be attached later (:meth:`attach_language_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perception.audiollm.audio_tokens import embed_audio, merge_audio
from perception.audiollm.aux_heads import (
    IGNORE_INDEX,
    aux_cross_entropy,
    build_aux_head,
    reads_acoustic,
    run_aux_head,
)
from perception.audiollm.configuration import DualEncoderConfig
from perception.audiollm.encoders import (
    FrameStackProjector,
    build_paralinguistic_tower,
    build_semantic_tower,
    tower_width,
)
from perception.audiollm.language_model import hidden_size as lm_hidden_size
from perception.audiollm.language_model import (
    load_language_model,
    prepare_language_model,
    resolve_language_model,
)
from perception.audiollm.training_groups import TrainingGroups

__all__ = [
    "IGNORE_INDEX",
    "DualEncoderForEmotionReasoning",
    "DualEncoderOutput",
    "load_language_model",
    "resolve_language_model",
]


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


class DualEncoderForEmotionReasoning(TrainingGroups, nn.Module):
    """Semantic + paralinguistic audio towers feeding a causal LM through placeholder tokens.

    ``language_model=None`` builds the model without its LM: ``hidden_size`` (the LM's width, which the
    adapters project to) is then required, and everything but the aux head's scores needs the LM attached
    first (:meth:`attach_language_model`)."""

    def __init__(
        self,
        config: DualEncoderConfig,
        language_model: nn.Module | None = None,
        *,
        hidden_size: int | None = None,
    ) -> None:
        super().__init__()
        if config.audio_token_id is None:
            raise ValueError("config.audio_token_id is unset: build the processor first (it adds the token)")
        if language_model is None and hidden_size is None:
            raise ValueError("give the language model, or the hidden_size its adapters project to")
        self.config = config
        self.hidden_size = lm_hidden_size(language_model) if language_model is not None else int(hidden_size)
        self.semantic_tower = build_semantic_tower(config)
        self.paralinguistic_tower = build_paralinguistic_tower(config)
        widths = (
            tower_width(self.semantic_tower, config.semantic.hidden_size),
            tower_width(self.paralinguistic_tower, config.paralinguistic.hidden_size),
        )
        self.semantic_projector = FrameStackProjector(
            widths[0], config.semantic.stack, self.hidden_size, config.projector
        )
        self.paralinguistic_projector = FrameStackProjector(
            widths[1], config.paralinguistic.stack, self.hidden_size, config.projector
        )
        self.aux_head = build_aux_head(config, self.hidden_size, widths) if config.aux_head else None
        self.language_model: nn.Module | None = None
        if language_model is not None:
            self.attach_language_model(language_model)
        self.freeze_pretrained()

    @classmethod
    def from_config(
        cls, config: DualEncoderConfig, cache_dir: Path | None = None
    ) -> DualEncoderForEmotionReasoning:
        return cls(config, load_language_model(config, cache_dir))

    def attach_language_model(self, lm: nn.Module) -> None:
        """Give a model built without its LM the base LM (placeholder row and LoRA added here, frozen but
        for LoRA); the LoRA weights of a saved run are loaded by
        :func:`perception.audiollm.checkpoint.attach_language_model`."""
        if self.language_model is not None:
            raise ValueError("this model already has its language model")
        width = lm_hidden_size(lm)
        if width != self.hidden_size:
            raise ValueError(
                f"the language model's hidden size {width} is not the adapters' {self.hidden_size}"
            )
        self.language_model = prepare_language_model(self.config, lm)

    def require_language_model(self) -> nn.Module:
        """The LM, or a ``ValueError`` saying it was not loaded (a model built for aux scores only)."""
        if self.language_model is None:
            raise ValueError(
                "this model was loaded without its language model (aux-head scores only); "
                "attach it first (checkpoint.attach_language_model)"
            )
        return self.language_model

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
        """Projected audio tokens ``(N, H)`` and per-clip counts ``(B, 2)`` (and with ``return_pooled``
        the towers' pooled states); see :func:`perception.audiollm.audio_tokens.embed_audio`."""
        return embed_audio(
            self,
            semantic_features,
            paralinguistic_features,
            semantic_lengths,
            paralinguistic_lengths,
            return_pooled,
            project,
        )

    @property
    def uses_acoustic(self) -> bool:
        """Whether the aux head reads ``acoustic_features`` (``(B, config.utterance_size)``)."""
        return self.aux_head is not None and reads_acoustic(self.config)

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
        if self.aux_head is None:
            return audio, counts, None
        logits = run_aux_head(self.aux_head, self.config, audio, counts, pooled, acoustic_features)
        return audio, counts, logits

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
        return merge_audio(self.config, self.require_language_model(), input_ids, audio)

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
        logits = self.require_language_model()(
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
        lm = self.require_language_model()
        audio, _ = self.embed_audio(
            semantic_features, paralinguistic_features, semantic_lengths, paralinguistic_lengths
        )
        embeds = self.merge_audio(input_ids, audio)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("max_new_tokens", 64)
        generate_kwargs.setdefault("suppress_tokens", [int(self.config.audio_token_id)])  # type: ignore[arg-type]
        return lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)

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
        if self.language_model is None:
            raise ValueError("this model was loaded without its language model (and LoRA): nothing to save")
        from perception.audiollm.checkpoint import save_trainable

        return save_trainable(self, directory)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        language_model: nn.Module | None = None,
        cache_dir: Path | None = None,
        with_language_model: bool = True,
    ) -> DualEncoderForEmotionReasoning:
        """Rebuild from a saved folder: the base LM from ``config.language_model`` (or the one given),
        then the trained parts on top. ``with_language_model=False``: towers, adapters and aux head only."""
        from perception.audiollm.checkpoint import load_trainable

        return load_trainable(directory, language_model, cache_dir, with_language_model=with_language_model)
