"""The shipped classical emotion estimator: standardized features → multinomial logistic regression.

Owns loading the asset file (``perception/assets/classical_emotion.npz``: plain arrays plus two JSON
strings, no pickle), class probabilities over :data:`perception.types.LABELS`, and valence/arousal.

Valence and arousal are the probability-weighted mean of per-label prototypes (a circumplex reading of
the six categories), then arousal is nudged by at most ±0.2 towards what the measured arousal cues say
(pitch, loudness, rate up → more aroused; more pausing → less):

========= ======= =======
label     valence arousal
========= ======= =======
angry     -0.6    +0.7
disgust   -0.6    +0.3
fear      -0.6    +0.6
happy     +0.8    +0.5
neutral    0.0     0.0
sad       -0.6    -0.5
========= ======= =======
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception.acoustics import CUES, CorpusNorms
from perception.base import PerceptionError
from perception.types import LABELS

DEFAULT_ASSET = Path(__file__).resolve().parent / "assets" / "classical_emotion.npz"

PROTOTYPES: dict[str, tuple[float, float]] = {
    "angry": (-0.6, 0.7),
    "disgust": (-0.6, 0.3),
    "fear": (-0.6, 0.6),
    "happy": (0.8, 0.5),
    "neutral": (0.0, 0.0),
    "sad": (-0.6, -0.5),
}
MAX_AROUSAL_NUDGE = 0.2


def valence_arousal(scores: dict[str, float], cue_z: dict[str, float] | None = None) -> tuple[float, float]:
    """Probability-weighted prototypes, arousal nudged by the measured arousal cues (z-scores)."""
    valence = sum(p * PROTOTYPES[label][0] for label, p in scores.items() if label in PROTOTYPES)
    arousal = sum(p * PROTOTYPES[label][1] for label, p in scores.items() if label in PROTOTYPES)
    if cue_z:
        signed = [CUES[c].arousal_sign * z for c, z in cue_z.items() if c in CUES and CUES[c].arousal_sign]
        if signed:
            arousal += float(np.clip(0.1 * np.mean(signed), -MAX_AROUSAL_NUDGE, MAX_AROUSAL_NUDGE))
    return round(float(np.clip(valence, -1, 1)), 3), round(float(np.clip(arousal, -1, 1)), 3)


@dataclass
class ClassicalEstimator:
    """Logistic regression over standardized eGeMAPS + Whisper-encoder features."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (len(LABELS), D)
    intercept: np.ndarray  # (len(LABELS),)
    norms: CorpusNorms
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> ClassicalEstimator:
        path = Path(path) if path else DEFAULT_ASSET
        if not path.is_file():
            raise PerceptionError(
                f"emotion estimator not found at {path}; train it with "
                "`python -m perception.train_classical --manifest CREMA-D/manifest.csv`"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                labels = tuple(str(x) for x in data["labels"])
                if labels != LABELS:
                    raise PerceptionError(f"estimator {path} has labels {labels}, expected {LABELS}")
                return cls(
                    mean=data["mean"].astype(np.float64),
                    scale=data["scale"].astype(np.float64),
                    coef=data["coef"].astype(np.float64),
                    intercept=data["intercept"].astype(np.float64),
                    norms=CorpusNorms.from_json(json.loads(str(data["norms"]))),
                    meta=json.loads(str(data["meta"])),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise PerceptionError(f"estimator file {path} is not a valid asset: {exc}") from exc

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def predict_proba(self, x: np.ndarray) -> dict[str, float]:
        """Class probabilities (sum to 1) for one feature vector ``(D,)``."""
        if x.shape != (self.dim,):
            raise PerceptionError(f"feature vector has shape {x.shape}, estimator expects ({self.dim},)")
        z = (np.nan_to_num(x.astype(np.float64)) - self.mean) / self.scale
        logits = self.coef @ z + self.intercept  # (len(LABELS),)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        rounded = np.round(p, 4)
        rounded[int(np.argmax(rounded))] += 1.0 - rounded.sum()  # keep the sum exactly 1 after rounding
        return {label: float(v) for label, v in zip(LABELS, rounded, strict=True)}
