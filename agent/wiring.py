"""Builds the shared services once per process and hands them to every voice session.

``Services`` is what ``voice/`` sees: a perceiver, the dialogue engine, TTS and the trajectory log.
Heavy models are loaded here, once, not per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from agent.config import Settings
from agent.perception_service import build_perception, close_perception
from agent.trajectory import TrajectoryLog
from dialogue.engine import DialogueEngine
from perception.base import SAMPLE_RATE, Perceiver
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
        client = redis_client(settings.redis_url)
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
        await asyncio.to_thread(warm_up, perceiver if settings.perception.mode == "in-process" else None, tts)
        return cls(settings, perceiver, dialogue, tts, trajectory, client)

    async def aclose(self) -> None:
        await self.dialogue.aclose()
        await self.trajectory.aclose()  # a last try at trajectory turns still buffered
        await self.redis.aclose()
        close_perception(self.perceiver)


def redis_client(url: str) -> aioredis.Redis:
    """The server's Redis client. A command failing on a connection Redis closed (a restart) is retried once
    on a new one, so the first turn after a restart is written at once instead of waiting in a buffer."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError])


def warm_up(perceiver: Perceiver | None, tts: TTS | None) -> None:
    """Run each model once before the first user does: the first call of an ONNX, CTranslate2 or torch
    model allocates and plans (hundreds of ms), which would otherwise land on the first turn's latency.
    The perception runs on a synthetic voiced sound against a throwaway speaker baseline; failures are
    logged, never raised (the server serves anyway)."""
    started = time.perf_counter()
    if perceiver is not None:
        t = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = 140 + 20 * np.sin(2 * np.pi * 1.5 * t)
        voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE) / k for k in range(1, 8))
        audio = (0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)).astype(np.float32)
        try:
            perceiver.perceive(audio, SAMPLE_RATE, perceiver.new_baseline())
            perceiver.perceive_text("Hello there.")
        except Exception as exc:
            log.warning("perception warm-up failed: %s", exc)
    if tts is not None:
        try:
            b"".join(tts.synthesize("Hello."))
        except Exception as exc:
            log.warning("TTS warm-up failed: %s", exc)
    log.info("models warmed up in %.1f s", time.perf_counter() - started)


def _dialogue_model_id(settings: Settings) -> str:
    """The id written on assistant trajectory records, e.g. ``local:smollm2-135m``."""
    d = settings.dialogue
    if d.llm_backend == "reply":  # the bundled model with the reply adapter
        adapter = Path(d.reply_adapter).name if d.reply_adapter else "empathetic-dialogues"
        return f"reply:{d.local_model}+{adapter}"
    return f"{d.llm_backend}:{d.local_model if d.llm_backend == 'local' else d.openai_model}"
