"""Audio input for perception: files and PCM bytes become mono float32 at 16 kHz.

Owns the one place where audio is decoded, down-mixed and resampled, and the checks that turn unusable
input (missing file, not audio, empty, too short) into a one-line :class:`perception.base.AudioError`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from perception.base import SAMPLE_RATE, AudioError

# Turns shorter than this carry too little speech for a transcript or cues (a click, a breath).
MIN_DURATION_S = 0.3


def to_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Down-mix ``(samples, channels)`` audio by averaging and resample to 16 kHz; float32 out."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise AudioError(f"expected mono or (samples, channels) audio, got shape {audio.shape}")
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    if sample_rate != SAMPLE_RATE and audio.size:
        g = gcd(int(sample_rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def check_usable(audio: np.ndarray, what: str = "audio", min_duration_s: float = MIN_DURATION_S) -> None:
    """Raise :class:`AudioError` when 16 kHz ``audio`` is empty, too short, silent or not finite."""
    if audio.size == 0:
        raise AudioError(f"{what} is empty")
    duration = audio.size / SAMPLE_RATE
    if duration < min_duration_s:
        raise AudioError(f"{what} is too short ({duration:.2f} s; at least {min_duration_s:.1f} s needed)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{what} contains NaN or infinite samples")
    if float(np.max(np.abs(audio))) < 1e-4:
        raise AudioError(f"{what} is silent")


def load_audio(path: str | Path, min_duration_s: float = MIN_DURATION_S) -> np.ndarray:
    """Read a wav/ogg/flac file (any rate, mono or stereo) as mono float32 at 16 kHz.

    Raises :class:`AudioError` with a one-line message for a missing file, a file that is not audio,
    and empty, too short or silent audio.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioError(f"not a file: {path}")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"not a readable audio file: {path} ({reason})") from exc
    audio = to_mono_16k(data, int(sample_rate))
    check_usable(audio, what=f"audio in {path.name}", min_duration_s=min_duration_s)
    return audio


def pcm16_to_float(b: bytes) -> np.ndarray:
    """Raw signed 16-bit little-endian mono PCM to float32 in [-1, 1)."""
    if len(b) % 2:
        raise AudioError(f"PCM16 needs an even number of bytes, got {len(b)}")
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768.0


@lru_cache(maxsize=65536)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes: the key of per-clip feature caches, so a copied or re-downloaded corpus
    hits the cache and an edited file never does. Memoised per (path, size, mtime) within a process."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
