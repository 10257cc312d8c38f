"""Per-speaker normalisation of the model's inputs (speaker-level CMVN with a corpus prior).

Emotion is heard relative to a voice: a naturally high, loud speaker is not angry. Both encoders'
inputs are therefore standardised against the speaker's own statistics before the model sees them, the
same way at training time (each clip against its speaker's clips) and at run time (each turn against the
conversation so far). On CREMA-D actors held out from training, eGeMAPS + pooled Whisper states with a
logistic regression go from UA 0.68 to 0.76 with this alone (``python -m bench.audiollm``).

Owns :class:`StreamStats` (per-dimension frame sums of one stream), :class:`FeatureNorms` (the training
corpus's statistics, saved next to a checkpoint as ``feature_norms.json``) and :class:`SpeakerFeatures`
(one speaker's running statistics, blended with the corpus ones as ``w = k / (k + prior)`` after ``k``
clips, so a first turn is judged against typical speech and later ones more and more against the
speaker). Normalised: ``whisper-ct2`` states, ``mel-cnn`` log-mel and the utterance-level acoustic
descriptors (a one-frame stream per clip); other inputs pass through.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perception.audiollm.configuration import DualEncoderConfig

FEATURE_NORMS_NAME = "feature_norms.json"
EPS = 1e-5


@dataclass
class StreamStats:
    """Frame count, sum and sum of squares per dimension of one stream, over some clips."""

    n_frames: float = 0.0
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    n_clips: int = 0

    def add(self, frames: np.ndarray) -> None:
        """``frames``: ``(T, D)``."""
        x = frames.astype(np.float64)
        s, sq = x.sum(axis=0), (x * x).sum(axis=0)
        self.total = s if self.total is None else self.total + s
        self.total_sq = sq if self.total_sq is None else self.total_sq + sq
        self.n_frames += x.shape[0]
        self.n_clips += 1

    def to_state(self) -> dict:
        """JSON-ready and exact: the sums as base64 of their float64 bytes."""
        return {
            "n_frames": self.n_frames,
            "n_clips": self.n_clips,
            "total": _array_state(self.total),
            "total_sq": _array_state(self.total_sq),
        }

    @classmethod
    def from_state(cls, state: dict) -> StreamStats:
        return cls(
            float(state["n_frames"]),
            _array_from_state(state["total"]),
            _array_from_state(state["total_sq"]),
            int(state["n_clips"]),
        )

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        if self.total is None or self.total_sq is None or self.n_frames == 0:
            raise ValueError("no frames seen")
        mean = self.total / self.n_frames
        return mean, np.maximum(self.total_sq / self.n_frames - mean * mean, 0.0)


ClipStreams = tuple  # (semantic, paralinguistic) or (semantic, paralinguistic, acoustic descriptors or None)


def _frames(config: DualEncoderConfig, stream: str, features: np.ndarray | None) -> np.ndarray | None:
    """``(T, D)`` view of a stream's features, or None when the stream is not normalised."""
    if features is None:
        return None
    if stream == "semantic":
        return features if config.semantic.kind == "whisper-ct2" else None
    if stream == "acoustic":
        return features[None] if config.utterance_size else None
    return features.T if config.paralinguistic.kind == "mel-cnn" else None


def _streams(clip: ClipStreams) -> tuple[tuple[str, np.ndarray | None], ...]:
    acoustic = clip[2] if len(clip) > 2 else None
    return (("semantic", clip[0]), ("paralinguistic", clip[1]), ("acoustic", acoustic))


@dataclass
class FeatureNorms:
    """Corpus mean and variance per dimension of each normalised stream."""

    mean: dict[str, np.ndarray]
    var: dict[str, np.ndarray]

    @classmethod
    def fit(cls, config: DualEncoderConfig, clips: list[ClipStreams]) -> FeatureNorms:
        """From ``(semantic, paralinguistic[, acoustic])`` features of the training clips."""
        mean, var = {}, {}
        for name, s in speaker_stats(config, clips).items():
            mean[name], var[name] = s.mean_var()
        return cls(mean, var)

    def to_json(self) -> dict:
        return {
            "mean": {k: [round(float(x), 6) for x in v] for k, v in self.mean.items()},
            "var": {k: [round(float(x), 6) for x in v] for k, v in self.var.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> FeatureNorms:
        return cls(
            {k: np.asarray(v, dtype=np.float64) for k, v in data["mean"].items()},
            {k: np.asarray(v, dtype=np.float64) for k, v in data["var"].items()},
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FEATURE_NORMS_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureNorms:
        path = Path(path)
        if path.is_dir():
            path = path / FEATURE_NORMS_NAME
        return cls.from_json(json.loads(path.read_text()))


def normalize_stream(
    frames: np.ndarray,
    norms: FeatureNorms,
    stream: str,
    speaker: StreamStats | None,
    prior: float,
    n_clips: int | None = None,
) -> np.ndarray:
    """``(frames - m) / sqrt(v)`` with ``m, v`` the speaker's statistics blended with the corpus ones
    (weight ``k / (k + prior)``; ``k`` = ``n_clips`` when given, else the clips the speaker stats hold)."""
    mean, var = norms.mean[stream], norms.var[stream]
    if speaker is not None and speaker.n_clips:
        k = speaker.n_clips if n_clips is None else n_clips
        w = k / (k + prior) if prior > 0 else 1.0
        s_mean, s_var = speaker.mean_var()
        mean = w * s_mean + (1 - w) * mean
        var = w * s_var + (1 - w) * var
    return ((frames - mean) / np.sqrt(var + EPS)).astype(np.float32)


def normalize_clip(
    config: DualEncoderConfig,
    norms: FeatureNorms,
    semantic: np.ndarray,
    paralinguistic: np.ndarray,
    speaker: dict[str, StreamStats] | None = None,
    n_clips: int | None = None,
    acoustic: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The clip's streams ``(semantic, paralinguistic, acoustic)``, normalised against ``speaker``
    (None: the corpus only)."""
    out = []
    for name, feats in _streams((semantic, paralinguistic, acoustic)):
        frames = _frames(config, name, feats)
        if frames is None or name not in norms.mean:
            out.append(feats)
            continue
        stats = speaker.get(name) if speaker else None
        normed = normalize_stream(frames, norms, name, stats, config.speaker_norm_prior, n_clips)
        out.append({"semantic": normed, "paralinguistic": normed.T, "acoustic": normed[0]}[name])
    return out[0], out[1], out[2]


@dataclass
class SpeakerFeatures:
    """One speaker's running stream statistics within a conversation (thread-safe)."""

    config: DualEncoderConfig
    norms: FeatureNorms
    stats: dict[str, StreamStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self, semantic: np.ndarray, paralinguistic: np.ndarray, acoustic: np.ndarray | None = None
    ) -> None:
        with self._lock:
            _add_clip(self.stats, self.config, (semantic, paralinguistic, acoustic))

    def normalize(
        self, semantic: np.ndarray, paralinguistic: np.ndarray, acoustic: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        with self._lock:
            return normalize_clip(
                self.config, self.norms, semantic, paralinguistic, self.stats, acoustic=acoustic
            )

    def reset(self) -> None:
        with self._lock:
            self.stats.clear()

    def to_state(self) -> dict:
        with self._lock:
            return {name: stats.to_state() for name, stats in self.stats.items()}

    def load_state(self, state: dict) -> None:
        stats = {name: StreamStats.from_state(value) for name, value in state.items()}
        with self._lock:
            self.stats = stats

    def __deepcopy__(self, memo: dict) -> SpeakerFeatures:
        """A copy with its own statistics and lock (config and corpus norms are shared, never mutated)."""
        import copy

        with self._lock:
            return SpeakerFeatures(self.config, self.norms, copy.deepcopy(self.stats, memo))


def _array_state(values: np.ndarray | None) -> str | None:
    if values is None:
        return None
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def _array_from_state(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)


def speaker_stats(config: DualEncoderConfig, clips: list[ClipStreams]) -> dict[str, StreamStats]:
    """Statistics of one speaker's clips (training: each clip is normalised against these)."""
    out: dict[str, StreamStats] = {}
    for clip in clips:
        _add_clip(out, config, clip)
    return out


def _add_clip(stats: dict[str, StreamStats], config: DualEncoderConfig, clip: ClipStreams) -> None:
    for name, feats in _streams(clip):
        frames = _frames(config, name, feats)
        if frames is not None:
            stats.setdefault(name, StreamStats()).add(frames)
