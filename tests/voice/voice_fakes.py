"""Lightweight in-test implementations of the interfaces a voice session uses.

They are deterministic and fast, so the session and server tests exercise the real websocket, VAD and
protocol code without loading perception or dialogue models.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NoReturn

import numpy as np
import pytest

from dialogue.events import PolicyChosen, Prosody, ReplyDone, ReplyEvent, TextDelta
from perception.base import AudioError, Perceiver, SpeakerBaseline
from perception.types import Emotion, Evidence, Perception
from voice.config import VoiceSettings
from voice.records import TurnRecord
from voice.tts import TTS

SHORT_REPLY = "I hear you. Tell me more."
LONG_REPLY = (
    "That sounds like a really hard day. It makes sense that you feel this way. "
    "Would you like to talk about what happened first? I am here to listen for as long as you need."
)


def perception_for(transcript: str, label: str = "neutral") -> Perception:
    scores = {name: 0.0 for name in ("angry", "disgust", "fear", "happy", "neutral", "sad")}
    scores[label] = 0.7
    scores["neutral" if label != "neutral" else "sad"] = 0.3
    return Perception(
        transcript=transcript,
        emotion=Emotion(label=label, scores=scores, valence=-0.4, arousal=0.6),
        reasoning=f"Sounds {label}: pitch is raised.",
        evidence=[Evidence(kind="acoustic", cue="pitch_mean", value=1.5, claim="raised pitch")],
        model="fake@1",
        timings_ms={"asr": 1.0},
    )


class FakeBaseline(SpeakerBaseline):
    def __init__(self) -> None:
        self.turns = 0

    def reset(self) -> None:
        self.turns = 0


class FakePerceiver(Perceiver):
    """Transcribes audio as its duration; refuses turns under ``min_s`` like a real perceiver would."""

    model_id = "fake@1"

    def __init__(self, min_s: float = 0.25, delay_s: float = 0.0) -> None:
        self.min_s = min_s
        self.delay_s = delay_s  # seconds each audio perception takes (in the session's worker thread)
        self.durations: list[float] = []
        self.baseline_turns_seen: list[int] = []  # turns the baseline had folded in, per perceive call

    def new_baseline(self) -> SpeakerBaseline:
        return FakeBaseline()

    def perceive(
        self, audio: np.ndarray, sample_rate: int = 16_000, baseline: SpeakerBaseline | None = None
    ) -> Perception:
        duration = len(audio) / sample_rate
        if duration < self.min_s:
            raise AudioError(f"turn too short ({duration:.2f} s)")
        self.durations.append(duration)
        if isinstance(baseline, FakeBaseline):
            self.baseline_turns_seen.append(baseline.turns)
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(baseline, FakeBaseline):
            baseline.turns += 1
        return perception_for(f"{duration:.2f} seconds of speech", "angry")

    def perceive_text(self, text: str, baseline: Any = None) -> Perception:
        return perception_for(text)


class FakeDialogue:
    """Streams a canned reply word by word: ``SHORT_REPLY``, or ``LONG_REPLY`` when the user says "long"."""

    def __init__(self, delay_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.sessions: set[str] = set()
        self.interrupted: list[tuple[str, str, str]] = []
        self.cancelled_replies = 0
        self.history: dict[str, list[tuple[str, str]]] = {}  # session -> (turn_id, user_text) answered
        self.forgotten: list[tuple[str, str]] = []

    async def start_session(self, session_id: str) -> bool:
        resumed = session_id in self.sessions
        self.sessions.add(session_id)
        return resumed

    async def reply(
        self, session_id: str, turn_id: str, user_text: str, perception: Perception
    ) -> AsyncIterator[ReplyEvent]:
        if user_text == "explode":
            raise RuntimeError("dialogue exploded")
        text = LONG_REPLY if "long" in user_text else SHORT_REPLY
        self.history.setdefault(session_id, []).append((turn_id, user_text))
        try:
            yield PolicyChosen("empathize", Prosody(length_scale=1.1))
            for piece in re.findall(r"\S+\s*", text):
                await asyncio.sleep(self.delay_s)
                yield TextDelta(piece)
            yield ReplyDone(text, "empathize", {"llm": 3.0})
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled_replies += 1
            raise

    async def mark_interrupted(self, session_id: str, turn_id: str, heard_text: str) -> None:
        self.interrupted.append((session_id, turn_id, heard_text))

    async def forget_turn(self, session_id: str, turn_id: str) -> bool:
        turns = self.history.get(session_id, [])
        if not turns or turns[-1][0] != turn_id:
            return False
        turns.pop()
        self.forgotten.append((session_id, turn_id))
        return True


class FakeTTS(TTS):
    """A 220 Hz tone, ``seconds_per_word`` per word, at 16 kHz."""

    def __init__(self, seconds_per_word: float = 0.12, sample_rate: int = 16_000) -> None:
        self.sample_rate = sample_rate
        self.seconds_per_word = seconds_per_word
        self.spoken: list[str] = []

    def synthesize(self, text: str, prosody: Prosody | None = None) -> Iterator[bytes]:
        self.spoken.append(text)
        n = int(len(text.split()) * self.seconds_per_word * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
        for i in range(0, len(pcm), 4000):
            yield pcm[i : i + 4000]


class FailingTTS(FakeTTS):
    """Synthesizes like :class:`FakeTTS` but raises on sentence number ``fail_on`` (1-based)."""

    def __init__(self, fail_on: int = 2) -> None:
        super().__init__()
        self.fail_on = fail_on

    def synthesize(self, text: str, prosody: Prosody | None = None) -> Iterator[bytes]:
        if len(self.spoken) + 1 == self.fail_on:
            self.spoken.append(text)
            raise RuntimeError("voice model crashed")
        return super().synthesize(text, prosody)


@dataclass
class FakeTrajectory:
    records: list[TurnRecord] = field(default_factory=list)
    audio: dict[str, bytes] = field(default_factory=dict)
    consent_default: bool = True
    keep_audio: bool = False
    dialogue_model: str | None = "fake-llm@1"

    async def append(self, record: TurnRecord) -> str:
        self.records.append(record)
        return str(len(self.records))

    async def store_audio(self, session_id: str, turn_id: str, wav: bytes) -> str:
        key = f"audio:{session_id}:{turn_id}"
        self.audio[key] = wav
        return key

    async def read(self, session_id: str) -> list[TurnRecord]:
        return [r for r in self.records if r.session_id == session_id]


def make_services(**voice: Any) -> SimpleNamespace:
    """A stand-in for ``agent.wiring.Services`` with fake models and test-sized limits."""
    settings = VoiceSettings(**{"max_text_chars": 200, "max_message_bytes": 64 * 1024, **voice})
    return SimpleNamespace(
        settings=SimpleNamespace(voice=settings),
        perceiver=FakePerceiver(),
        dialogue=FakeDialogue(),
        tts=FakeTTS(),
        trajectory=FakeTrajectory(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose environment (Redis, a browser) is missing; under CI (``CI=true``) fail instead, so
    a pipeline cannot pass without running it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this test must run, not be skipped")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def serving(
    services: Any, vad: Any, stop: asyncio.Event | None = None, playback_lead_s: float = 0.2
) -> AsyncIterator[SimpleNamespace]:
    """The real voice server over ``services`` in this event loop; it drains when ``stop`` is set (as on
    SIGTERM) and is cancelled when the block ends."""
    from voice.server import serve

    port, ready = free_port(), asyncio.Event()
    task = asyncio.create_task(
        serve(
            services,
            "127.0.0.1",
            port,
            ready=ready,
            vad=vad,
            playback_lead_s=playback_lead_s,
            handle_signals=False,
            stop=stop,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield SimpleNamespace(
            url=f"ws://127.0.0.1:{port}/ws",
            http=f"http://127.0.0.1:{port}",
            port=port,
            services=services,
            task=task,
            stop=stop,
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
