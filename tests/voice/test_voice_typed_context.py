"""Typed turns are read after the session's earlier turns: the session's baseline carries their words."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from websockets.asyncio.client import connect

from perception.base import Perceiver
from perception.types import Perception
from tests.voice.test_voice_session import events_of, start, text_turn
from tests.voice.voice_fakes import FakePerceiver


class ContextRecorder(FakePerceiver):
    """The real typed-turn reading of :class:`perception.base.Perceiver`, recording the context it had."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[list[str]] = []

    def perceive_text(self, text: str, baseline: Any = None) -> Perception:
        self.contexts.append(baseline.recent_texts() if baseline is not None else [])
        return Perceiver.perceive_text(self, text, baseline)


async def test_each_typed_turn_sees_the_words_of_the_turns_before_it(voice_server: SimpleNamespace) -> None:
    voice_server.services.perceiver = recorder = ContextRecorder()
    async with connect(voice_server.url) as ws:
        await start(ws)
        for text in ("My dog died yesterday.", "I keep thinking about him.", "Yeah."):
            seen = await text_turn(ws, text)
            assert events_of(seen, "user.perception")[0]["transcript"] == text
    assert recorder.contexts == [
        [],
        ["My dog died yesterday."],
        ["My dog died yesterday.", "I keep thinking about him."],
    ]


async def test_sessions_keep_their_own_context(voice_server: SimpleNamespace) -> None:
    voice_server.services.perceiver = recorder = ContextRecorder()
    async with connect(voice_server.url) as first, connect(voice_server.url) as second:
        await start(first)
        await start(second)
        await text_turn(first, "I failed my exam.")
        await text_turn(second, "Hello.")
    assert recorder.contexts == [[], []]
