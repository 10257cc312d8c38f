"""Acoustic conditions a turn can arrive in: other rooms, microphones, lines and speakers' tempo.

Each condition maps 16 kHz mono float32 audio to a degraded copy of it, the same length class (speed
changes the length), reproducibly from a ``numpy`` generator:

* ``noise-15db`` / ``noise-5db``: pink noise at that signal-to-noise ratio (a fan, a street, a café);
* ``reverb``: a synthetic room (exponentially decaying noise impulse response, RT60 0.4-0.8 s, with a
  direct path), as a laptop microphone across a room hears;
* ``telephone``: 300-3,400 Hz band, 8 kHz sampling and 8-bit mu-law (G.711), as a phone line carries;
* ``speed-0.9`` / ``speed-1.1``: played 10 % slower or faster (tempo and pitch together), as another
  speaker's pace and voice would shift both;
* ``quiet``: 20 dB lower level, as a distant or badly set microphone gives.

They are a few lines of ``scipy.signal`` each, which is why no augmentation library is used here (the
usual ones pull in librosa and numba, and need further packages for rooms and codecs).

    from perception.degradations import degrade
    noisy = degrade(audio, "noise-15db", np.random.default_rng(0))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from perception.base import SAMPLE_RATE, PerceptionError

Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 1/f noise (white noise shaped in the frequency domain), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise / _rms(noise)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = pink_noise(len(audio), rng) * _rms(audio) / 10 ** (snr_db / 20)
    return audio + noise


def reverberate(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room response: a direct path, then exponentially decaying noise."""
    rt60 = rng.uniform(0.4, 0.8)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    response = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    response[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after the direct path
    response *= 0.5 / np.sqrt(np.sum(response**2))  # reverberant energy a quarter of the direct
    response[0] = 1.0
    wet = signal.fftconvolve(audio, response)[: len(audio)]
    return wet * (_rms(audio) / _rms(wet))


def telephone(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """300-3,400 Hz, resampled to 8 kHz, mu-law companded to 8 bits and back, then back to 16 kHz."""
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = signal.resample_poly(signal.sosfilt(sos, audio), 1, 2)
    peak = max(float(np.max(np.abs(narrow))), 1e-9)
    x = np.clip(narrow / peak, -1.0, 1.0)
    mu = 255.0
    coded = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.0) / 127.0
    decoded = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu * peak
    return signal.resample_poly(decoded, 2, 1)[: len(audio)]


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together), by resampling."""
    up, down = 100, int(round(100 * factor))
    return signal.resample_poly(audio, up, down)


CONDITIONS: dict[str, Degradation] = {
    "clean": lambda audio, rng: audio,
    "noise-15db": lambda audio, rng: add_noise(audio, 15.0, rng),
    "noise-5db": lambda audio, rng: add_noise(audio, 5.0, rng),
    "reverb": reverberate,
    "telephone": telephone,
    "speed-0.9": lambda audio, rng: change_speed(audio, 0.9),
    "speed-1.1": lambda audio, rng: change_speed(audio, 1.1),
    "quiet": lambda audio, rng: audio * 10 ** (-20 / 20),
}


def degrade(audio: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """``audio`` (16 kHz mono) as heard in ``condition`` (a key of :data:`CONDITIONS`), float32, clipped
    to [-1, 1]."""
    try:
        fn = CONDITIONS[condition]
    except KeyError:
        raise PerceptionError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}") from None
    out = fn(np.asarray(audio, dtype=np.float64), rng)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
