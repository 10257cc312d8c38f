"""Builds the shared services once per process and hands them to every voice session.

``Services`` is what ``voice/`` sees: a perceiver, the dialogue engine, TTS and the trajectory log.
Heavy models are loaded here, once, not per connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from agent.config import Settings
from agent.perception_service import build_perception, close_perception
from agent.trajectory import TrajectoryLog
from dialogue.engine import DialogueEngine
from perception.base import Perceiver
from voice.tts import TTS, build_tts

log = logging.getLogger(__name__)


class RedisUnavailable(RuntimeError):
    """Redis at ``EMO_REDIS_URL`` cannot be reached."""


@dataclass
class Services:
    settings: Settings
    perceiver: Perceiver
    dialogue: DialogueEngine
    tts: TTS | None
    trajectory: TrajectoryLog
    redis: aioredis.Redis

    @classmethod
    async def create(cls, settings: Settings) -> Services:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            await client.ping()
        except Exception as exc:  # connection refused, DNS, auth: all mean "no Redis"
            await client.aclose()
            raise RedisUnavailable(
                f"cannot reach Redis at {settings.redis_url} ({exc}); start one "
                "(e.g. `redis-server --daemonize yes`) or set EMO_REDIS_URL"
            ) from exc
        perceiver = build_perception(settings)  # the models here, or the workers' queue (docs/scaling.md)
        log.info("loading dialogue (%s)", settings.dialogue.llm_backend)
        dialogue = await DialogueEngine.create(settings, client)
        tts = build_tts(settings.voice) if settings.voice.tts_enabled else None
        trajectory = TrajectoryLog(
            client,
            ttl_s=settings.trajectory.ttl_s,
            consent_default=settings.trajectory.consent_default,
            keep_audio=settings.trajectory.keep_audio,
            dialogue_model=_dialogue_model_id(settings),
            buffer_turns=settings.trajectory.buffer_turns,
            buffer_bytes=settings.trajectory.buffer_bytes,
            write_timeout_s=settings.trajectory.write_timeout_s,
        )
        return cls(settings, perceiver, dialogue, tts, trajectory, client)

    async def aclose(self) -> None:
        await self.dialogue.aclose()
        await self.trajectory.aclose()  # a last try at trajectory turns still buffered
        await self.redis.aclose()
        close_perception(self.perceiver)


def _dialogue_model_id(settings: Settings) -> str:
    """The id written on assistant trajectory records, e.g. ``local:smollm2-135m``."""
    d = settings.dialogue
    if d.llm_backend == "reply":  # the bundled model with the reply adapter
        adapter = Path(d.reply_adapter).name if d.reply_adapter else "empathetic-dialogues"
        return f"reply:{d.local_model}+{adapter}"
    return f"{d.llm_backend}:{d.local_model if d.llm_backend == 'local' else d.openai_model}"
