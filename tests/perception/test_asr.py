"""Whisper wrapper: frame arithmetic (fast) and the bundled tiny.en on a real clip (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.asr import WhisperASR, _compression_ratio

CREMA_D = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "crema-d").resolve()


def test_frames_cover_the_audio_at_50_per_second() -> None:
    assert WhisperASR.n_frames(16_000) == 50
    assert WhisperASR.n_frames(16_001) == 51
    assert WhisperASR.n_frames(1) == 1


def test_repetition_loops_have_high_compression_ratio() -> None:
    assert _compression_ratio("I'm on my way to the meeting.") < 2.4
    assert _compression_ratio("thank you " * 30) > 2.4


@pytest.mark.slow
def test_tiny_en_transcript_and_trimmed_states() -> None:
    clip = CREMA_D / "audio" / "1001_DFA_NEU_XX.ogg"
    if not clip.exists():
        pytest.skip(f"CREMA-D not found at {CREMA_D} (expected beside the repository)")
    from perception.audio import load_audio

    asr = WhisperASR("tiny.en")
    audio = load_audio(clip)
    result = asr.analyze(audio)
    assert "jacket" in result.transcript.lower()
    assert result.states.shape == (WhisperASR.n_frames(len(audio)), 384)
    np.testing.assert_allclose(asr.encode(audio), result.states, atol=1e-4)
    assert asr.encode_compact(audio).shape[1] == 384
