"""Audio loading: formats, rates, channels and the one-line errors for unusable input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perception.audio import load_audio, pcm16_to_float, to_mono_16k
from perception.base import AudioError


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k1_wav_becomes_mono_16k(tmp_path: Path) -> None:
    left = tone(1.0, 44_100)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # right channel silent: mean halves amplitude
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44_100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16_000) <= 1
    assert np.max(np.abs(audio)) == pytest.approx(0.15, abs=0.02)


def test_flac_and_ogg_at_other_rates(tmp_path: Path) -> None:
    for name, rate in (("a.flac", 22_050), ("b.ogg", 48_000)):
        sf.write(tmp_path / name, tone(0.5, rate), rate)
        assert abs(len(load_audio(tmp_path / name)) - 8_000) <= 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(AudioError, match="not a readable audio file") as info:
        load_audio(path)
    assert "\n" not in str(info.value)


def test_empty_short_and_silent(tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    sf.write(tmp_path / "short.wav", tone(0.1, 16_000), 16_000)
    sf.write(tmp_path / "silent.wav", np.zeros(16_000, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="too short"):
        load_audio(tmp_path / "short.wav")
    with pytest.raises(AudioError, match="silent"):
        load_audio(tmp_path / "silent.wav")


def test_pcm16_to_float() -> None:
    raw = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    out = pcm16_to_float(raw)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0, 32767 / 32768])
    with pytest.raises(AudioError):
        pcm16_to_float(b"\x00\x01\x02")


def test_to_mono_rejects_bad_shape() -> None:
    with pytest.raises(AudioError):
        to_mono_16k(np.zeros((2, 2, 2), dtype=np.float32), 16_000)
