"""Fixtures for the dialogue tests: scripted chat models, perceptions, and a clean Redis namespace."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from dialogue.state import PerceptionSummary
from perception.types import LABELS, Emotion, Perception


class ScriptedChatModel(BaseChatModel):
    """Streams a fixed reply word by word and records every prompt it was given."""

    reply: str = "I hear you. That sounds really hard. Do you want to talk about it?"
    delay_s: float = 0.0
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    cancelled: int = 0
    finished: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _pieces(self) -> list[str]:
        return re.findall(r"\s*\S+", self.reply)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.calls.append(list(messages))
        for piece in self._pieces():
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.calls.append(list(messages))
        try:
            for piece in self._pieces():
                await asyncio.sleep(self.delay_s)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        finally:
            self.finished += 1


def summary(label: str, valence: float, arousal: float, confidence: float = 0.8) -> PerceptionSummary:
    rest = (1.0 - confidence) / (len(LABELS) - 1)
    scores = {name: (confidence if name == label else rest) for name in LABELS}
    return PerceptionSummary(label=label, scores=scores, valence=valence, arousal=arousal)


def perception(label: str, valence: float, arousal: float, transcript: str = "") -> Perception:
    s = summary(label, valence, arousal)
    return Perception(
        transcript=transcript,
        emotion=Emotion(label=label, scores=s["scores"], valence=valence, arousal=arousal),
        reasoning="test",
        model="test",
    )


@pytest.fixture
def scripted() -> ScriptedChatModel:
    return ScriptedChatModel()


@pytest.fixture
def dialogue_redis_url() -> str:
    return os.environ.get("EMO_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def redis_client(dialogue_redis_url: str) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(dialogue_redis_url)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001
        await client.aclose()
        pytest.fail(f"integration tests need Redis at {dialogue_redis_url}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def key_prefix(redis_client: Any) -> AsyncIterator[str]:
    """A fresh Redis key namespace, deleted after the test."""
    prefix = f"test-dialogue-{uuid.uuid4().hex[:10]}"
    yield prefix
    async for key in redis_client.scan_iter(match=f"{prefix}:*"):
        await redis_client.delete(key)
