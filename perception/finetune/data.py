"""Training items per task, built from clips, their cached features and verified reasoning targets, and
the deterministic batch sampler the trainer draws from.

Batches depend only on ``(seed, global step)``, so a resumed run draws exactly the batches the
interrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.audiollm.processing import DualEncoderProcessor, EncodedExample, Task
from perception.finetune.datasets import Clip
from perception.finetune.features import ClipFeatures, FeatureCache
from perception.finetune.supervision import SupervisionStats, Teacher, TeacherInput, corpus_zscores, supervise


@dataclass
class TrainItem:
    task: Task
    semantic: np.ndarray
    paralinguistic: np.ndarray
    target: str
    emotion: str | None


def build_items(
    clips: list[Clip], features: list[ClipFeatures], teacher: Teacher, labels: tuple[str, ...]
) -> tuple[dict[str, list[TrainItem]], SupervisionStats]:
    """Items of every task: ``asr`` for clips with a transcript, ``emotion`` for labelled clips,
    ``emotion_reasoning`` for labelled clips whose teacher explanation verified."""
    cue_z = corpus_zscores([f.cues for f in features])
    labelled = [i for i, c in enumerate(clips) if c.emotion in labels]
    inputs = [TeacherInput(features[i].transcript, clips[i].emotion or "", cue_z[i]) for i in labelled]
    targets, stats = supervise(inputs, teacher, labels)
    pools: dict[str, list[TrainItem]] = {"asr": [], "emotion": [], "emotion_reasoning": []}
    for clip, feat in zip(clips, features, strict=True):
        if feat.transcript.strip():
            pools["asr"].append(
                TrainItem("asr", feat.semantic, feat.paralinguistic, feat.transcript, clip.emotion)
            )
    for i, target in zip(labelled, targets, strict=True):
        feat, label = features[i], clips[i].emotion
        pools["emotion"].append(TrainItem("emotion", feat.semantic, feat.paralinguistic, label or "", label))
        if target is not None:
            pools["emotion_reasoning"].append(
                TrainItem("emotion_reasoning", feat.semantic, feat.paralinguistic, target, label)
            )
    return pools, stats


def prepare_items(
    clips: list[Clip], cache: FeatureCache, teacher: Teacher, labels: tuple[str, ...], progress: bool = True
) -> tuple[dict[str, list[TrainItem]], SupervisionStats]:
    clips = cache.warm(clips, progress=progress)
    return build_items(clips, [cache.get(c) for c in clips], teacher, labels)


class BatchSampler:
    """Draws a batch for a global step: a task by the phase's weights, then items of that task."""

    def __init__(
        self, pools: dict[str, list[TrainItem]], processor: DualEncoderProcessor, seed: int = 0
    ) -> None:
        self.pools = pools
        self.processor = processor
        self.seed = seed

    def batch(
        self, global_step: int, tasks: dict[str, float], batch_size: int
    ) -> tuple[str, list[EncodedExample]]:
        rng = np.random.default_rng([self.seed, global_step])
        names = [t for t, w in tasks.items() if w > 0 and self.pools.get(t)]
        if not names:
            raise ValueError(f"no training items for any of the tasks {sorted(tasks)}")
        weights = np.array([tasks[t] for t in names], dtype=np.float64)
        task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        pool = self.pools[task]
        picks = rng.choice(len(pool), size=batch_size, replace=len(pool) < batch_size)
        examples = [
            self.processor.encode(
                pool[i].task,
                pool[i].semantic,
                pool[i].paralinguistic,
                target=pool[i].target,
                emotion=pool[i].emotion,
            )
            for i in picks
        ]
        return task, examples
