"""The acoustic conditions the robustness bench degrades clips with."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from perception.base import PerceptionError
from perception.degradations import CONDITIONS, degrade, pink_noise

RATE = 16_000


def tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    freqs, power = signal.welch(x, fs=RATE, nperseg=1024)
    return float(power[(freqs >= lo) & (freqs < hi)].sum())


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_every_condition_gives_bounded_float32_and_is_reproducible(condition: str) -> None:
    audio = tone()
    a = degrade(audio, condition, np.random.default_rng(3))
    b = degrade(audio, condition, np.random.default_rng(3))
    assert a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
    np.testing.assert_array_equal(a, b)


def test_noise_is_added_at_the_requested_snr() -> None:
    audio = tone()
    noisy = degrade(audio, "noise-5db", np.random.default_rng(0))
    noise = noisy - audio
    snr = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(5.0, abs=0.2)


def test_pink_noise_falls_with_frequency() -> None:
    noise = pink_noise(4 * RATE, np.random.default_rng(0))
    assert band_energy(noise, 100, 200) > 5 * band_energy(noise, 3000, 3100)


def test_speed_changes_the_length_by_the_factor() -> None:
    audio = tone(2.0)
    for factor in (0.9, 1.1):
        faster = degrade(audio, f"speed-{factor}", np.random.default_rng(0))
        assert len(faster) == pytest.approx(len(audio) / factor, abs=2)


def test_telephone_removes_what_a_phone_line_cannot_carry() -> None:
    t = np.arange(RATE) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    phone = degrade(audio, "telephone", np.random.default_rng(0))
    assert len(phone) == len(audio)
    assert band_energy(phone, 5000, 7000) < 1e-3 * band_energy(audio, 5000, 7000)
    assert band_energy(phone, 900, 1100) > 0.5 * band_energy(audio, 900, 1100)  # speech band kept


def test_reverb_keeps_the_level_and_adds_a_tail() -> None:
    audio = np.zeros(RATE, dtype=np.float32)
    audio[:1600] = tone(0.1)
    wet = degrade(audio, "reverb", np.random.default_rng(0))
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(audio**2)), rel=0.05)
    assert np.abs(wet[3200:4800]).max() > 1e-3  # the room still rings 0.1 s after the sound stopped


def test_quiet_is_20_db_lower() -> None:
    audio = tone()
    assert np.abs(degrade(audio, "quiet", np.random.default_rng(0))).max() == pytest.approx(
        np.abs(audio).max() / 10, rel=1e-3
    )


def test_unknown_condition_names_the_known_ones() -> None:
    with pytest.raises(PerceptionError, match="unknown condition 'underwater'.*reverb"):
        degrade(tone(), "underwater", np.random.default_rng(0))
