"""Models are run once at start, so the first user's turn does not pay for their first call."""

from __future__ import annotations

import logging

import pytest

from agent.wiring import warm_up
from tests.voice.voice_fakes import FakePerceiver, FakeTTS


class CountingTTS(FakeTTS):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def synthesize(self, text, prosody=None):
        self.calls += 1
        return super().synthesize(text, prosody)


def test_warm_up_perceives_once_and_speaks_once() -> None:
    perceiver, tts = FakePerceiver(), CountingTTS()
    warm_up(perceiver, tts)
    assert len(perceiver.durations) == 1 and perceiver.durations[0] == pytest.approx(1.5)
    assert tts.calls == 1


def test_a_failing_warm_up_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    warm_up(FakePerceiver(min_s=5.0), None)  # refuses the 1.5 s warm-up sound
    assert "perception warm-up failed" in caplog.text
