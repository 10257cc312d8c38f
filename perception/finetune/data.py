"""Training items per task, built from clips, their cached features and verified reasoning targets, and
the deterministic batch sampler the trainer draws from.

Batches depend only on ``(seed, global step)``, so a resumed run draws exactly the batches the
interrupted one would have. With the config's ``speaker_norm`` every clip is standardised against its
speaker's statistics (:mod:`perception.audiollm.speaker_norm`) at a randomly drawn conversation depth
``k``, as the run-time baseline would after ``k`` turns; with ``augment`` the log-mel stream gets level,
noise and SpecAugment-style masks and the semantic stream time masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.audiollm.configuration import DualEncoderConfig
from perception.audiollm.processing import DualEncoderProcessor, EncodedExample, Task, reasoning_context
from perception.audiollm.speaker_norm import FeatureNorms, StreamStats, normalize_clip, speaker_stats
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
    speaker: str | None = None
    acoustic: np.ndarray | None = None  # the aux head's utterance input (processing.utterance_features)
    context: str = ""  # emotion_reasoning: the cues and transcript as text (processing.reasoning_context)


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
                TrainItem(
                    "asr",
                    feat.semantic,
                    feat.paralinguistic,
                    feat.transcript,
                    clip.emotion,
                    clip.speaker,
                    feat.head_input(),
                )
            )
    for i, target in zip(labelled, targets, strict=True):
        feat, label, speaker = features[i], clips[i].emotion, clips[i].speaker
        pools["emotion"].append(
            TrainItem(
                "emotion", feat.semantic, feat.paralinguistic, label or "", label, speaker, feat.head_input()
            )
        )
        if target is not None:
            pools["emotion_reasoning"].append(
                TrainItem(
                    "emotion_reasoning",
                    feat.semantic,
                    feat.paralinguistic,
                    target,
                    label,
                    speaker,
                    feat.head_input(),
                    reasoning_context(cue_z[i], feat.transcript),  # the z-scores the teacher cited
                )
            )
    return pools, stats


def prepare_items(
    clips: list[Clip], cache: FeatureCache, teacher: Teacher, labels: tuple[str, ...], progress: bool = True
) -> tuple[dict[str, list[TrainItem]], SupervisionStats]:
    clips = cache.warm(clips, progress=progress)
    return build_items(clips, [cache.get(c) for c in clips], teacher, labels)


class SpeakerNormalizer:
    """Training-time speaker normalisation: every speaker's statistics over its clips, the corpus's."""

    def __init__(self, config: DualEncoderConfig, norms: FeatureNorms, items: list[TrainItem]) -> None:
        self.config = config
        self.norms = norms
        by_speaker: dict[str, list[TrainItem]] = {}
        for item in items:
            if item.speaker:
                by_speaker.setdefault(item.speaker, []).append(item)
        self.stats: dict[str, dict[str, StreamStats]] = {
            spk: speaker_stats(config, [(i.semantic, i.paralinguistic, i.acoustic) for i in group])
            for spk, group in by_speaker.items()
        }

    @classmethod
    def from_pools(cls, config: DualEncoderConfig, pools: dict[str, list[TrainItem]]) -> SpeakerNormalizer:
        """Statistics from the distinct clips of the pools (the ``emotion`` pool, else any)."""
        items = pools.get("emotion") or next((p for p in pools.values() if p), [])
        norms = FeatureNorms.fit(config, [(i.semantic, i.paralinguistic, i.acoustic) for i in items])
        return cls(config, norms, items)

    def __call__(
        self,
        semantic: np.ndarray,
        paralinguistic: np.ndarray,
        speaker: str | None,
        rng: np.random.Generator,
        acoustic: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        stats = self.stats.get(speaker or "")
        depth = None
        if stats:
            clips = max(s.n_clips for s in stats.values())
            depth = int(rng.integers(1, max(2, min(clips, 40)) + 1))  # a conversation k turns in
        return normalize_clip(self.config, self.norms, semantic, paralinguistic, stats, depth, acoustic)


def augment_streams(
    config: DualEncoderConfig, semantic: np.ndarray, paralinguistic: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Another room and microphone, cheaply, on cached features (run before normalisation).

    Log-mel (Whisper's scale, ``(log10 power + 4) / 4``): a -6..+6 dB level change, a noise floor
    20-45 dB below the loudest bin with a random spectral tilt, two frequency and two time masks.
    Semantic states: two time masks. Other input kinds pass through.
    """
    if config.paralinguistic.kind == "mel-cnn":
        mel = paralinguistic.astype(np.float64)
        power = mel * 4.0 - 4.0 + rng.uniform(-0.6, 0.6)  # log10 power, level jitter
        n_mels, frames = power.shape
        tilt = np.linspace(0.0, rng.uniform(-1.0, 1.0), n_mels)[:, None]
        floor = power.max() - rng.uniform(2.0, 4.5) + tilt
        noisy = np.log10(10.0**power + 10.0**floor)
        mel = ((np.maximum(noisy, noisy.max() - 8.0) + 4.0) / 4.0).astype(np.float32)
        for _ in range(2):
            width = int(rng.integers(0, 9))
            start = int(rng.integers(0, max(1, n_mels - width)))
            mel[start : start + width] = mel.mean()
            width = int(rng.integers(0, max(1, frames // 10) + 1))
            start = int(rng.integers(0, max(1, frames - width)))
            mel[:, start : start + width] = mel.mean()
        paralinguistic = mel
    if config.semantic.kind == "whisper-ct2":
        semantic = semantic.copy()
        frames = semantic.shape[0]
        for _ in range(2):
            width = int(rng.integers(0, max(1, frames // 10) + 1))
            start = int(rng.integers(0, max(1, frames - width)))
            semantic[start : start + width] = semantic.mean(axis=0)
    return semantic, paralinguistic


class BatchSampler:
    """Draws a batch for a global step: a task by the phase's weights, then items of that task.

    Under ``accelerate launch`` each of the ``world`` processes takes its own ``batch_size`` items of one
    global batch of ``batch_size * world`` (the task is the same on every process, so data-parallel
    gradients average over the same parameters); a single process draws exactly what it always did.
    """

    def __init__(
        self,
        pools: dict[str, list[TrainItem]],
        processor: DualEncoderProcessor,
        seed: int = 0,
        normalizer: SpeakerNormalizer | None = None,
        augment: bool = False,
    ) -> None:
        self.pools = pools
        self.processor = processor
        self.seed = seed
        self.normalizer = normalizer
        self.augment = augment

    def _features(
        self, item: TrainItem, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        sem, para, acoustic = item.semantic, item.paralinguistic, item.acoustic
        if self.augment and rng.random() < 0.5:
            sem, para = augment_streams(self.processor.config, sem, para, rng)
        if self.normalizer is not None:
            sem, para, acoustic = self.normalizer(sem, para, item.speaker, rng, acoustic)
        return sem, para, acoustic

    def batch(
        self, global_step: int, tasks: dict[str, float], batch_size: int, rank: int = 0, world: int = 1
    ) -> tuple[str, list[EncodedExample]]:
        rng = np.random.default_rng([self.seed, global_step])
        names = [t for t, w in tasks.items() if w > 0 and self.pools.get(t)]
        if not names:
            raise ValueError(f"no training items for any of the tasks {sorted(tasks)}")
        weights = np.array([tasks[t] for t in names], dtype=np.float64)
        task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        pool = self.pools[task]
        total = batch_size * world
        picks = rng.choice(len(pool), size=total, replace=len(pool) < total)
        if world > 1:  # this process's share; its augmentation draws are its own
            picks = picks[rank * batch_size : (rank + 1) * batch_size]
            rng = np.random.default_rng([self.seed, global_step, rank])
        examples = []
        for i in picks:
            sem, para, acoustic = self._features(pool[i], rng)
            item = pool[i]
            examples.append(
                self.processor.encode(
                    item.task,
                    sem,
                    para,
                    target=item.target,
                    emotion=item.emotion,
                    acoustic=acoustic,
                    context=item.context,
                )
            )
        return task, examples
