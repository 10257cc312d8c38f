"""The write-behind checkpointer on a real redis-server of the test's own, stopped and started again."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from agent.config import DialogueSettings, Settings
from dialogue.checkpoint import WriteBehindSaver
from dialogue.engine import DialogueEngine
from dialogue.events import ReplyDone
from tests.conftest import RedisProcess

from .conftest import ScriptedChatModel, perception

pytestmark = pytest.mark.integration


async def engine_on(client: aioredis.Redis, llm: ScriptedChatModel, **dialogue: Any) -> DialogueEngine:
    engine = await DialogueEngine.create(Settings(dialogue=DialogueSettings(**dialogue)), client, llm=llm)
    saver = engine.graph.checkpointer
    assert isinstance(saver, WriteBehindSaver)
    saver.retry_s = 0.05
    return engine


async def say(engine: DialogueEngine, session: str, turn: str, text: str) -> ReplyDone:
    events = [e async for e in engine.reply(session, turn, text, perception("sad", -0.5, 0.1))]
    assert isinstance(events[-1], ReplyDone)
    return events[-1]


async def test_replies_go_on_while_redis_is_down_and_nothing_is_lost(redis_process: RedisProcess) -> None:
    client = aioredis.Redis.from_url(redis_process.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    llm = ScriptedChatModel(reply="I hear you. Tell me more.")
    engine = await engine_on(client, llm, history_turns=2)  # both earlier turns in the prompt
    await say(engine, "s1", "t1", "I lost my keys.")
    assert await engine.graph.checkpointer.flush(5.0)

    redis_process.stop()
    second = await say(engine, "s1", "t2", "And I missed the bus.")
    third = await say(engine, "s1", "t3", "Now I am late.")
    assert second.text and third.text
    prompt = [m.content for m in llm.calls[-1]]
    assert "I lost my keys." in prompt and "And I missed the bus." in prompt  # the history, from memory
    assert [t["turn_id"] for t in await engine.history("s1")] == ["t1", "t2", "t3"]
    saver = engine.graph.checkpointer
    assert saver.pending > 0 and not await saver.flush(0.3)
    assert engine.storage_degraded

    redis_process.start()
    assert await saver.flush(10.0)
    assert not engine.storage_degraded and saver.dropped == 0
    await engine.aclose()

    restarted = await engine_on(client, llm)  # nothing in memory: all of it comes from Redis
    assert await restarted.start_session("s1") is True
    turns = await restarted.history("s1")
    assert [t["turn_id"] for t in turns] == ["t1", "t2", "t3"]
    assert [t["user_text"] for t in turns][1:] == ["And I missed the bus.", "Now I am late."]
    await restarted.aclose()
    await client.aclose()


async def test_a_session_first_seen_while_redis_is_down_starts_in_memory(redis_process: RedisProcess) -> None:
    client = aioredis.Redis.from_url(redis_process.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    llm = ScriptedChatModel(reply="Okay. I am listening.")
    engine = await engine_on(client, llm)
    redis_process.stop()
    assert await engine.start_session("fresh") is False
    await say(engine, "fresh", "t1", "Hello there.")
    await say(engine, "fresh", "t2", "Are you there?")
    assert [t["turn_id"] for t in await engine.history("fresh")] == ["t1", "t2"]
    redis_process.start()
    assert await engine.graph.checkpointer.flush(10.0)
    await engine.aclose()
    resumed = await engine_on(client, llm)
    assert [t["turn_id"] for t in await resumed.history("fresh")] == ["t1", "t2"]
    await resumed.aclose()
    await client.aclose()


async def test_memory_is_bounded_per_session_and_in_sessions(redis_process: RedisProcess) -> None:
    client = aioredis.Redis.from_url(redis_process.url)
    llm = ScriptedChatModel(reply="Mm. Go on.")
    engine = await engine_on(client, llm, memory_sessions=2)
    saver = engine.graph.checkpointer
    saver.keep_checkpoints = 12
    for i in range(8):
        await say(engine, "long", f"t{i}", f"Sentence number {i}.")
    assert await saver.flush(5.0)
    stored = saver.local.storage["long"][""]
    assert len(stored) <= 12
    blobs = [key for key in saver.local.blobs if key[0] == "long"]
    channels = saver.local.get_tuple(engine._config("long")).checkpoint["channel_versions"]
    assert len(blobs) <= 12 * len(channels)
    assert [t["turn_id"] for t in await engine.history("long")] == [f"t{i}" for i in range(8)]
    # the latest turn can still be forgotten from memory alone
    assert await engine.forget_turn("long", "t7")
    assert [t["turn_id"] for t in await engine.history("long")][-1] == "t6"

    for name in ("a", "b"):  # two more sessions push the least recently used one out of memory
        await say(engine, name, "t0", "Hi.")
    assert await saver.flush(5.0)
    assert "long" not in saver._hot and "long" not in saver.local.storage
    assert [t["turn_id"] for t in await engine.history("long")][-1] == "t6"  # reloaded from Redis
    engine.end_session("a")
    assert "a" not in saver._hot
    await engine.aclose()
    await client.aclose()


async def test_a_full_queue_drops_the_oldest_write_and_says_so(redis_process: RedisProcess, caplog) -> None:
    client = aioredis.Redis.from_url(redis_process.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    engine = await engine_on(client, ScriptedChatModel(reply="I see."), write_queue=5)
    redis_process.stop()
    await say(engine, "s", "t1", "One.")
    await say(engine, "s", "t2", "Two.")
    saver = engine.graph.checkpointer
    assert saver.pending == 5 and saver.dropped > 0
    assert "queue full" in caplog.text
    redis_process.start()
    assert await saver.flush(10.0)
    await engine.aclose()
    await client.aclose()
