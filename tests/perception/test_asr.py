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
    np.testing.assert_allclose(asr.encode_compact(audio), result.states, atol=1e-4)
    assert asr.encode(audio).shape == (WhisperASR.n_frames(len(audio)), 384)


@pytest.mark.slow
def test_spliced_window_is_the_speech_then_the_silence_states() -> None:
    asr = WhisperASR("tiny.en")
    audio = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    states = asr.encode_compact(audio)
    window = np.asarray(asr.spliced_window(states))[0]
    silence = asr.silence_states()
    assert window.shape == silence.shape == (1500, 384)
    np.testing.assert_array_equal(window[: len(states)], states)
    np.testing.assert_array_equal(window[len(states) :], silence[len(states) :])


@pytest.mark.slow
def test_spliced_decoding_matches_the_standard_padded_pass_on_real_speech() -> None:
    clips = sorted((CREMA_D / "audio").glob("10[01]*_*.ogg"))[:12]
    if not clips:
        pytest.skip(f"CREMA-D not found at {CREMA_D} (expected beside the repository)")
    from perception.audio import load_audio
    from perception.evaluation import word_error_rate

    spliced, standard = WhisperASR("tiny.en"), WhisperASR("tiny.en", spliced=False)
    audio = [load_audio(c) for c in clips]
    a = [spliced.transcribe(x) for x in audio]
    b = [standard.transcribe(x) for x in audio]
    assert word_error_rate(b, a) < 0.1  # the two decodings agree (up to a word here and there)
