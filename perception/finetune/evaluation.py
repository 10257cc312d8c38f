"""Held-out evaluation during training: UA / WA / macro-F1 from the model's own ``label_scores``.

Owns :class:`EvalItem` (a held-out clip's two feature streams and gold label), :func:`holdout_speakers`
(an actor-held-out split of the training clips), :func:`score_items` and :class:`HeldOutEvaluator`, the
callable the trainer runs every ``eval_every`` steps. Metrics come from :mod:`perception.evaluation`
(:func:`~perception.evaluation.confusion_matrix`, :func:`~perception.evaluation.metrics_from_confusion`),
the same code as ``emo-agent eval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perception.audiollm.configuration import DualEncoderConfig
from perception.audiollm.modeling import DualEncoderForEmotionReasoning
from perception.audiollm.processing import DualEncoderProcessor
from perception.audiollm.speaker_norm import FeatureNorms, SpeakerFeatures
from perception.evaluation import confusion_matrix, conversation_order, metrics_from_confusion
from perception.finetune.datasets import Clip
from perception.finetune.features import ClipFeatures


@dataclass
class EvalItem:
    semantic: np.ndarray
    paralinguistic: np.ndarray
    emotion: str
    speaker: str | None = None
    acoustic: np.ndarray | None = None


def eval_items(clips: list[Clip], features: list[ClipFeatures], labels: tuple[str, ...]) -> list[EvalItem]:
    """Held-out items: the clips with a label in ``labels``."""
    return [
        EvalItem(f.semantic, f.paralinguistic, c.emotion, c.speaker, f.head_input())
        for c, f in zip(clips, features, strict=True)
        if c.emotion in labels
    ]


def running_normalized(
    config: DualEncoderConfig, norms: FeatureNorms, items: list[EvalItem], seed: int = 0
) -> list[EvalItem]:
    """Items with both streams normalised the way the run-time perceiver does it: per speaker, in
    :func:`conversation_order`, each clip against the speaker's clips so far (itself included)."""
    out: list[EvalItem | None] = [None] * len(items)
    baselines: dict[str, SpeakerFeatures] = {}
    for i in conversation_order([it.speaker for it in items], seed):
        it = items[i]
        base = baselines.setdefault(it.speaker or f"#{i}", SpeakerFeatures(config, norms))
        base.add(it.semantic, it.paralinguistic, it.acoustic)
        sem, para, acoustic = base.normalize(it.semantic, it.paralinguistic, it.acoustic)
        out[i] = EvalItem(sem, para, it.emotion, it.speaker, acoustic)
    return [o for o in out if o is not None]


def holdout_speakers(clips: list[Clip], n_speakers: int, seed: int = 0) -> tuple[list[Clip], list[Clip]]:
    """``(train, held_out)``: every clip of ``n_speakers`` speakers (drawn with ``seed``) is held out.
    Clips without a speaker always train."""
    speakers = sorted({c.speaker for c in clips if c.speaker})
    if n_speakers <= 0:
        return clips, []
    if n_speakers >= len(speakers):
        raise ValueError(f"cannot hold out {n_speakers} of {len(speakers)} speakers")
    rng = np.random.default_rng(seed)
    held = {speakers[i] for i in rng.choice(len(speakers), size=n_speakers, replace=False)}
    return [c for c in clips if c.speaker not in held], [c for c in clips if c.speaker in held]


@torch.no_grad()
def score_items(
    model: DualEncoderForEmotionReasoning,
    processor: DualEncoderProcessor,
    items: list[EvalItem],
    batch_size: int = 8,
) -> list[str]:
    """Predicted label (argmax of :meth:`label_scores`) of every item."""
    labels = list(model.config.labels)
    token_ids = processor.label_token_ids()
    device = next(model.parameters()).device
    predictions: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        examples = [
            processor.encode("emotion", i.semantic, i.paralinguistic, acoustic=i.acoustic) for i in chunk
        ]
        batch = processor.collate(examples, padding_side="left")
        batch.pop("emotion_labels", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        probs = model.label_scores(**batch, label_token_ids=token_ids)  # (B, n_labels)
        predictions.extend(labels[int(i)] for i in probs.argmax(dim=-1).tolist())
    return predictions


def classification_report(true: list[str], pred: list[str], labels: tuple[str, ...]) -> dict[str, Any]:
    """``n``, ``ua``, ``wa``, ``macro_f1`` and the confusion matrix, as in the eval report."""
    cm = confusion_matrix(true, pred, labels)
    metrics = metrics_from_confusion(cm)
    return {
        "n": len(true),
        "labels": list(labels),
        **{k: round(v, 4) for k, v in metrics.items()},
        "confusion": {t: {p: int(cm[i, j]) for j, p in enumerate(labels)} for i, t in enumerate(labels)},
    }


class HeldOutEvaluator:
    """``evaluator(model) -> report``: the held-out metrics of the model as it is now (eval mode)."""

    def __init__(
        self,
        items: list[EvalItem],
        processor: DualEncoderProcessor,
        batch_size: int = 8,
        norms: FeatureNorms | None = None,
    ) -> None:
        """With ``norms`` (a ``speaker_norm`` model) the items are normalised per speaker first
        (:func:`running_normalized`), exactly as ``emo-agent eval`` and the live loop see them."""
        if not items:
            raise ValueError("the held-out set has no labelled clips")
        if norms is not None:
            items = running_normalized(processor.config, norms, items)
        self.items = items
        self.processor = processor
        self.batch_size = batch_size

    def __call__(self, model: DualEncoderForEmotionReasoning) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        try:
            pred = score_items(model, self.processor, self.items, self.batch_size)
        finally:
            model.train(was_training)
        return classification_report([i.emotion for i in self.items], pred, tuple(model.config.labels))
