"""The emotion estimator's input vector and its on-disk cache for corpus-scale extraction.

Owns :func:`feature_vector` (the one definition used at training and at run time), light training
augmentation (:func:`augment`) and :func:`extract_cached`, which stores each clip's measurements under
``<cache_dir>/features/<FEATURE_VERSION>/`` so re-running training is quick.

Vector layout (``FEATURE_DIM = 88 + 2 * d_model``; 856 for Whisper tiny.en):
eGeMAPSv02 functionals (88) | mean of compact Whisper encoder states (d) | their std over time (d).
No transcript or sentence identity enters the vector: the estimator must not learn CREMA-D's 12
sentences.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.acoustics import AcousticAnalyzer, PauseStats
from perception.audio import file_digest

# Bump when anything that changes stored features changes (models, augmentation, pooling).
FEATURE_VERSION = "v2-egemaps-tinyen-compact"


@dataclass
class ClipFeatures:
    functionals: np.ndarray  # (88,)
    enc_mean: np.ndarray  # (d_model,)
    enc_std: np.ndarray  # (d_model,)
    pauses: PauseStats

    def vector(self) -> np.ndarray:
        return feature_vector(self.functionals, self.enc_mean, self.enc_std)


def feature_vector(functionals: np.ndarray, enc_mean: np.ndarray, enc_std: np.ndarray) -> np.ndarray:
    return np.concatenate([functionals, enc_mean, enc_std]).astype(np.float32)


def pool_states(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over time of ``(frames, d_model)`` encoder states."""
    return states.mean(axis=0), states.std(axis=0)


def augment(audio: np.ndarray, seed: int) -> np.ndarray:
    """A different room and microphone, cheaply: gain of -6..+6 dB and pink-ish noise at 15-30 dB SNR.

    The noise also masks the fine spectral detail an Opus codec removes, so the estimator leans less on
    codec artifacts present in the training corpus.
    """
    rng = np.random.default_rng(seed)
    gain = 10 ** (rng.uniform(-6, 6) / 20)
    white = rng.standard_normal(len(audio) + 1)
    noise = np.diff(np.cumsum(white) * 0.02 + white)[: len(audio)]  # tilted towards low frequencies
    signal_power = float(np.mean(audio.astype(np.float64) ** 2)) + 1e-10
    snr_db = rng.uniform(15, 30)
    noise *= np.sqrt(signal_power / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    out = (audio + noise) * gain
    peak = float(np.max(np.abs(out)))
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)


def compute_clip_features(audio: np.ndarray, analyzer: AcousticAnalyzer, asr) -> ClipFeatures:
    """Measurements of one 16 kHz clip (``asr``: a :class:`perception.asr.WhisperASR`)."""
    measurement = analyzer.measure(audio)
    enc_mean, enc_std = pool_states(asr.encode_compact(audio))
    return ClipFeatures(measurement.functionals, enc_mean, enc_std, measurement.pauses)


def cache_path(cache_dir: Path, audio_path: Path, variant: str) -> Path:
    key = f"{file_digest(audio_path)}|{variant}"
    digest = hashlib.sha1(key.encode()).hexdigest()
    return Path(cache_dir) / "features" / FEATURE_VERSION / digest[:2] / f"{digest}.npz"


def save_clip(path: Path, clip: ClipFeatures) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    p = clip.pauses
    np.savez(
        tmp,
        functionals=clip.functionals,
        enc_mean=clip.enc_mean,
        enc_std=clip.enc_std,
        pauses=np.array([p.speech_span_s, p.pause_share, p.pause_rate, p.n_pauses], dtype=np.float64),
    )
    os.replace(tmp, path)


def load_clip(path: Path) -> ClipFeatures:
    with np.load(path) as data:
        p = data["pauses"]
        return ClipFeatures(
            data["functionals"],
            data["enc_mean"],
            data["enc_std"],
            PauseStats(float(p[0]), float(p[1]), float(p[2]), int(p[3])),
        )


def variant_seed(audio_path: Path, variant: str) -> int:
    return int(hashlib.sha1(f"{audio_path.name}|{variant}".encode()).hexdigest()[:8], 16)
