"""The sans-I/O turn-taking state machine, driven by a deterministic VAD: loud chunks are speech."""

from __future__ import annotations

import numpy as np
import pytest

from voice.turns import (
    CHUNK_SAMPLES,
    BargeIn,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEnded,
    TurnSettings,
)

SR = 16_000


def loud_is_speech(chunk: np.ndarray) -> float:
    return float(min(1.0, np.abs(chunk).mean() * 2))  # 0.5 amplitude → 1.0, silence → 0.0


def speech(ms: float) -> np.ndarray:
    return np.full(int(SR * ms / 1000), 0.5, dtype=np.float32)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(SR * ms / 1000), dtype=np.float32)


def chunks(ms: float) -> int:
    return max(1, round(ms * SR / 1000 / CHUNK_SAMPLES))


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.fixture
def detector() -> TurnDetector:
    return TurnDetector(loud_is_speech, TurnSettings())


def test_speech_starts_after_min_speech(detector: TurnDetector) -> None:
    assert detector.feed(silence(1000)) == []
    min_speech = chunks(200)
    assert detector.feed(speech((min_speech - 1) * 32)) == []
    events = detector.feed(speech(32))
    assert kinds(events) == ["SpeechStarted"]
    assert events[0].t == pytest.approx(1000 // 32 * CHUNK_SAMPLES / SR, abs=0.033)
    assert detector.in_speech


def test_turn_ends_after_silence_with_pre_roll(detector: TurnDetector) -> None:
    lead = silence(32 * 40)  # whole chunks, so the arithmetic below is exact
    events = detector.feed(np.concatenate([lead, speech(32 * 30), silence(32 * 40)]))
    assert kinds(events) == ["SpeechStarted", "SpeechStopped", "TurnEnded"]
    turn = events[-1]
    assert isinstance(turn, TurnEnded) and turn.reason == "silence"
    pre_roll, min_silence = chunks(300), chunks(500)
    assert len(turn.audio) == (pre_roll + 30 + min_silence) * CHUNK_SAMPLES
    assert not turn.audio[: pre_roll * CHUNK_SAMPLES].any()  # the pre-roll is the silence before
    assert turn.audio[pre_roll * CHUNK_SAMPLES : (pre_roll + 30) * CHUNK_SAMPLES].min() == 0.5
    assert turn.t_end == pytest.approx((40 + 30 + min_silence) * CHUNK_SAMPLES / SR)
    assert turn.t_start == pytest.approx(turn.t_end - turn.duration_s)
    assert events[1].t == pytest.approx(turn.t_end)


def test_short_bursts_never_start_a_turn(detector: TurnDetector) -> None:
    burst = np.concatenate([speech(32 * 3), silence(32 * 20)])
    assert detector.feed(np.tile(burst, 5)) == []
    assert detector.flush() == []  # the last burst is over: nothing pending


def test_hysteresis_keeps_a_wavering_voice(detector: TurnDetector) -> None:
    wavering = np.full(512 * 30, 0.2, dtype=np.float32)  # probability 0.4: below threshold, above 0.35
    events = detector.feed(np.concatenate([speech(32 * 10), wavering]))
    assert kinds(events) == ["SpeechStarted"]


def test_max_length_cuts_and_restarts() -> None:
    d = TurnDetector(loud_is_speech, TurnSettings(max_turn_s=1.0, pre_roll_ms=0))
    events = d.feed(speech(3000))
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and all(e.reason == "max_length" for e in ended)
    assert len(ended[0].audio) == int(1.0 * SR / CHUNK_SAMPLES) * CHUNK_SAMPLES
    assert kinds(events)[:3] == ["SpeechStarted", "SpeechStopped", "TurnEnded"]
    assert kinds(events)[3] == "SpeechStarted"  # the speech goes on: a new turn starts


def test_flush_while_speaking_keeps_partial_chunk(detector: TurnDetector) -> None:
    detector.feed(speech(32 * 10))
    detector.feed(speech(10))  # 160 samples, not a whole chunk
    events = detector.flush()
    assert kinds(events) == ["SpeechStopped", "TurnEnded"]
    assert events[-1].reason == "flush"
    assert len(events[-1].audio) == 10 * CHUNK_SAMPLES + 160
    assert detector.flush() == []


def test_flush_with_short_speech_ends_turn_without_speech_events(detector: TurnDetector) -> None:
    detector.feed(np.concatenate([silence(32 * 20), speech(32 * 2)]))
    events = detector.flush()
    assert kinds(events) == ["TurnEnded"]
    assert len(events[0].audio) == (chunks(300) + 2) * CHUNK_SAMPLES


def test_flush_without_speech_is_empty(detector: TurnDetector) -> None:
    detector.feed(silence(500))
    assert detector.flush() == []


def test_barge_in_only_while_assistant_speaks(detector: TurnDetector) -> None:
    assert not any(isinstance(e, BargeIn) for e in detector.feed(speech(600)))
    detector.flush()
    detector.assistant_speaking = True
    events = detector.feed(speech(32 * (chunks(300) - 1)))
    assert not any(isinstance(e, BargeIn) for e in events)
    events = detector.feed(speech(32 * 20))
    barge = [e for e in events if isinstance(e, BargeIn)]
    assert len(barge) == 1  # once per stretch of speech
    events = detector.feed(np.concatenate([silence(600), speech(400)]))
    assert sum(isinstance(e, BargeIn) for e in events) == 1  # a new stretch barges in again


def test_chunking_does_not_matter() -> None:
    audio = np.concatenate([silence(700), speech(900), silence(700), speech(500), silence(800)])
    whole = TurnDetector(loud_is_speech).feed(audio)
    d = TurnDetector(loud_is_speech)
    rng = np.random.default_rng(1)
    pieces, pos = [], 0
    while pos < len(audio):
        n = int(rng.integers(1, 2000))
        pieces.extend(d.feed(audio[pos : pos + n]))
        pos += n
    assert kinds(whole) == kinds(pieces) == ["SpeechStarted", "SpeechStopped", "TurnEnded"] * 2
    for a, b in zip(whole, pieces, strict=True):
        if isinstance(a, TurnEnded):
            np.testing.assert_array_equal(a.audio, b.audio)
        elif isinstance(a, SpeechStarted | SpeechStopped):
            assert a.t == b.t


def test_settings_from_voice_settings() -> None:
    from agent.config import VoiceSettings

    s = TurnSettings.from_voice_settings(VoiceSettings(vad_threshold=0.6, barge_in_ms=250))
    assert (s.threshold, s.barge_in_ms, s.min_silence_ms, s.pause_ms) == (0.6, 250, 500, 120)


# ------------------------------------------------------------------------------------ speculative pauses


@pytest.fixture
def pausing() -> TurnDetector:
    return TurnDetector(loud_is_speech, TurnSettings(pause_ms=200, min_silence_ms=500))


def test_a_pause_comes_before_the_end_of_the_turn_with_the_audio_so_far(pausing: TurnDetector) -> None:
    events = pausing.feed(np.concatenate([silence(32 * 20), speech(32 * 30), silence(32 * 40)]))
    assert kinds(events) == ["SpeechStarted", "SpeechPaused", "SpeechStopped", "TurnEnded"]
    paused, ended = events[1], events[-1]
    assert paused.t_end - ended.t_start == pytest.approx(len(paused.audio) / SR)
    assert ended.t_end - paused.t_end == pytest.approx((chunks(500) - chunks(200)) * CHUNK_SAMPLES / SR)
    # the paused audio is the ended turn's audio but for the silence after the pause
    assert np.array_equal(paused.audio, ended.audio[: len(paused.audio)])
    assert not ended.audio[len(paused.audio) :].any() and ended.paused


def test_speech_after_a_pause_resumes_the_turn_and_each_silence_pauses_once(pausing: TurnDetector) -> None:
    events = pausing.feed(np.concatenate([speech(32 * 20), silence(32 * 9)]))
    assert kinds(events) == ["SpeechStarted", "SpeechPaused"]
    assert pausing.feed(silence(32 * 3)) == []  # still the same silence: no second pause
    events = pausing.feed(speech(32 * 10))
    assert kinds(events) == ["SpeechResumed"] and pausing.in_speech
    events = pausing.feed(silence(32 * 30))
    assert kinds(events) == ["SpeechPaused", "SpeechStopped", "TurnEnded"]
    assert events[-1].paused and events[0].t_end < events[-1].t_end


def test_a_turn_that_resumed_ends_unpaused_at_max_length() -> None:
    detector = TurnDetector(loud_is_speech, TurnSettings(pause_ms=200, max_turn_s=1.5))
    events = detector.feed(np.concatenate([speech(500), silence(250), speech(1500)]))
    assert kinds(events)[:5] == [
        "SpeechStarted",
        "SpeechPaused",
        "SpeechResumed",
        "SpeechStopped",
        "TurnEnded",
    ]
    assert events[4].reason == "max_length" and not events[4].paused


def test_flush_after_a_pause_ends_the_paused_turn(pausing: TurnDetector) -> None:
    pausing.feed(np.concatenate([speech(600), silence(250)]))
    events = pausing.flush()
    assert kinds(events) == ["SpeechStopped", "TurnEnded"] and events[-1].paused


@pytest.mark.parametrize("pause_ms", [0, 500, 800])
def test_no_pauses_when_off_or_not_shorter_than_the_end_of_turn_silence(pause_ms: int) -> None:
    detector = TurnDetector(loud_is_speech, TurnSettings(pause_ms=pause_ms, min_silence_ms=500))
    events = detector.feed(np.concatenate([speech(600), silence(300), speech(300), silence(1000)]))
    assert kinds(events) == ["SpeechStarted", "SpeechStopped", "TurnEnded"] and not events[-1].paused
