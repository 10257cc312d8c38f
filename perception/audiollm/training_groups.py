"""Which parts of the dual-encoder model the training schedule switches on and off.

Owns :class:`TrainingGroups`, mixed into the dual-encoder model
(:class:`~perception.audiollm.modeling.DualEncoderForEmotionReasoning`): its modules and trainable
parameters by group (``semantic``, ``paralinguistic``: each adapter, with its tower when that trains;
``lora``: the LM holding the adapters; ``aux_head``), as :mod:`perception.finetune.schedule` names them.
"""

from __future__ import annotations

from torch import nn


class TrainingGroups:
    """Group bookkeeping over the model's ``semantic_*``, ``paralinguistic_*``, ``language_model`` and
    ``aux_head`` modules (an nn.Module mixin)."""

    def module_groups(self) -> dict[str, list[nn.Module]]:
        """Modules by the groups the training schedule switches on and off (``lora``: the LM holding the
        adapters)."""
        return {
            "semantic": [self.semantic_projector]
            + ([self.semantic_tower] if self.config.semantic.trainable else []),
            "paralinguistic": [self.paralinguistic_projector]
            + ([self.paralinguistic_tower] if self.config.paralinguistic.trainable else []),
            "lora": [self.language_model] if self.language_model is not None else [],
            "aux_head": [self.aux_head] if self.aux_head is not None else [],
        }

    def train_groups_only(self, groups: tuple[str, ...] | list[str]) -> None:
        """Training mode for the modules of ``groups`` only; every other module in eval mode (no
        dropout, fixed normalisation statistics), as frozen encoders under a probe."""
        modules = self.module_groups()
        self.eval()  # type: ignore[attr-defined]
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
