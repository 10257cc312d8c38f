"""The trajectory log when Redis goes away: turn records wait in a bounded buffer, in order, and are written
when it is back; the client gets a ``warning``, never a failed turn.

The unit tests drive :class:`~voice.records.RecordBuffer` over a log that fails on demand. The last ones
run a real ``redis-server`` of their own on a free port, stop it in the middle of a conversation over a
real websocket and start it again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from agent.config import Settings
from agent.trajectory import TrajectoryLog
from dialogue.engine import DialogueEngine
from tests.conftest import RedisProcess
from tests.dialogue.conftest import ScriptedChatModel
from tests.voice.test_voice_session import events_of, recv_until, start
from tests.voice.voice_fakes import FakeTrajectory, make_services, perception_for, serving
from voice.records import PendingTurn, RecordBuffer, TurnRecorder, WriteResult, assistant_record, user_record
from voice.vad import SileroVAD


def turn(n: int, session_id: str = "s") -> tuple[Any, Any]:
    user = user_record(session_id, f"t{n}", perception_for(f"turn {n}"), t_start=float(n), t_end=n + 0.5)
    reply = assistant_record(
        session_id,
        f"t{n}",
        f"reply {n}",
        started=n + 0.6,
        now=n + 0.9,
        policy="empathize",
        model="m",
        interrupted=False,
        latency_ms={},
    )
    return user, reply


class FlakyLog(FakeTrajectory):
    """A log that raises ``ConnectionError`` while ``down``, optionally only after ``fail_after`` more
    successful writes (to fail in the middle of a turn)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.fail_after: int | None = None
        self.attempts = 0

    def _check(self) -> None:
        self.attempts += 1
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.down, self.fail_after = True, None
            else:
                self.fail_after -= 1
        if self.down:
            raise ConnectionError("connection refused")

    async def append(self, record: Any) -> str:
        self._check()
        return await super().append(record)

    async def store_audio(self, session_id: str, turn_id: str, wav: bytes) -> str:
        self._check()
        return await super().store_audio(session_id, turn_id, wav)


class Outlet:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def order(log: FakeTrajectory) -> list[tuple[str, str]]:
    return [(r.turn_id, r.speaker) for r in log.records]


# ------------------------------------------------------------------------------------------- the buffer


async def test_writes_go_straight_through_while_the_log_answers() -> None:
    log = FlakyLog()
    buffer = RecordBuffer(log, retry_s=0.01)
    assert await buffer.write(PendingTurn(*turn(1))) is WriteResult.WRITTEN
    assert order(log) == [("t1", "user"), ("t1", "assistant")] and buffer.pending == 0


async def test_turns_wait_while_the_log_is_down_and_are_written_in_order_when_it_is_back() -> None:
    log = FlakyLog()
    buffer = RecordBuffer(log, retry_s=0.01, max_retry_s=0.02)
    await buffer.write(PendingTurn(*turn(1)))
    log.down = True
    results = [await buffer.write(PendingTurn(*turn(n))) for n in (2, 3, 4)]
    assert results == [WriteResult.BUFFERED] * 3 and buffer.pending == 3
    attempts = log.attempts
    await buffer.write(PendingTurn(*turn(5)))
    assert log.attempts - attempts <= 1  # a later turn queues at once; only the retry task knocks
    await asyncio.sleep(0.1)
    assert order(log) == [("t1", "user"), ("t1", "assistant")]  # nothing gets through while down
    log.down = False
    for _ in range(100):
        if buffer.pending == 0:
            break
        await asyncio.sleep(0.01)
    assert buffer.pending == 0 and buffer.pending_bytes == 0
    assert order(log) == [(f"t{n}", who) for n in range(1, 6) for who in ("user", "assistant")]
    await buffer.aclose()


async def test_a_turn_failing_half_way_is_resumed_not_repeated() -> None:
    log = FlakyLog(keep_audio=True)
    buffer = RecordBuffer(log, retry_s=0.01)
    log.fail_after = 2  # the audio and the user's record get through, the assistant's does not
    user, reply = turn(1)
    assert await buffer.write(PendingTurn(user, reply, b"RIFFwav")) is WriteResult.BUFFERED
    log.down = False
    assert await buffer.flush()
    assert order(log) == [("t1", "user"), ("t1", "assistant")]  # no second user record
    assert list(log.audio) == ["audio:s:t1"] and log.records[0].audio_ref == "audio:s:t1"


async def test_the_buffer_is_bounded_in_turns_and_bytes() -> None:
    log = FlakyLog()
    log.down = True
    buffer = RecordBuffer(log, max_turns=2, retry_s=60)
    results = [await buffer.write(PendingTurn(*turn(n))) for n in range(4)]
    assert results == [WriteResult.BUFFERED, WriteResult.BUFFERED, WriteResult.DROPPED, WriteResult.DROPPED]
    assert buffer.dropped == 2
    small = RecordBuffer(log, max_bytes=PendingTurn(*turn(0)).nbytes + 10, retry_s=60)
    assert await small.write(PendingTurn(*turn(0))) is WriteResult.BUFFERED
    assert await small.write(PendingTurn(*turn(1), b"x" * 1000)) is WriteResult.DROPPED
    log.down = False
    assert await buffer.flush() and await small.flush()
    assert [r.turn_id for r in log.records] == ["t0", "t0", "t1", "t1", "t0", "t0"]
    await buffer.aclose()
    await small.aclose()


async def test_no_buffer_means_a_turn_in_an_outage_is_dropped() -> None:
    log = FlakyLog()
    log.down = True
    buffer = RecordBuffer(log, max_turns=0)
    assert await buffer.write(PendingTurn(*turn(1))) is WriteResult.DROPPED


async def test_a_write_that_hangs_counts_as_unreachable() -> None:
    class HangingLog(FakeTrajectory):
        hang = True

        async def append(self, record: Any) -> str:
            if self.hang:
                await asyncio.sleep(3600)
            return await super().append(record)

    log = HangingLog()
    buffer = RecordBuffer(log, write_timeout_s=0.05, retry_s=0.01)
    started = time.monotonic()
    assert await buffer.write(PendingTurn(*turn(1))) is WriteResult.BUFFERED
    assert time.monotonic() - started < 1.0
    log.hang = False
    assert await buffer.flush() and len(log.records) == 2


async def test_a_record_the_log_refuses_for_good_is_dropped_not_retried_forever(caplog) -> None:
    class RefusingLog(FakeTrajectory):
        async def append(self, record: Any) -> str:
            if record.turn_id == "t1":
                raise ValueError("not storable")
            return await super().append(record)

    log = RefusingLog()
    buffer = RecordBuffer(log)
    assert await buffer.write(PendingTurn(*turn(1))) is WriteResult.DROPPED
    assert await buffer.write(PendingTurn(*turn(2))) is WriteResult.WRITTEN
    assert "refused turn t1" in caplog.text


async def test_close_writes_what_waits_if_it_can(caplog) -> None:
    log = FlakyLog()
    log.down = True
    buffer = RecordBuffer(log, retry_s=60)
    await buffer.write(PendingTurn(*turn(1)))
    await buffer.aclose()  # still down: said so, by count
    assert "1 trajectory turns could not be written" in caplog.text
    log.down = False
    buffer2 = RecordBuffer(log, retry_s=60)
    log.down = True
    await buffer2.write(PendingTurn(*turn(2)))
    log.down = False
    await buffer2.aclose()
    assert order(log) == [("t2", "user"), ("t2", "assistant")]


# ----------------------------------------------------------------------------------------- the recorder


async def test_the_recorder_warns_the_client_when_a_turn_waits_or_is_dropped() -> None:
    log = FlakyLog()
    log.write_buffer = RecordBuffer(log, max_turns=1, retry_s=60)  # type: ignore[attr-defined]
    outlet = Outlet()
    recorder = TurnRecorder(log, outlet=outlet)
    assert await recorder.write(*turn(1), None) is WriteResult.WRITTEN
    assert outlet.events == []
    log.down = True
    assert await recorder.write(*turn(2), None) is WriteResult.BUFFERED
    assert await recorder.write(*turn(3), None) is WriteResult.DROPPED
    assert [(e["type"], e["code"]) for e in outlet.events] == [
        ("warning", "trajectory_buffered"),
        ("warning", "trajectory_dropped"),
    ]
    assert "1 waiting" in outlet.events[0]["message"]
    await log.write_buffer.aclose()  # type: ignore[attr-defined]


async def test_the_recorder_without_a_buffer_warns_of_a_lost_turn() -> None:
    log = FlakyLog()
    log.down = True
    outlet = Outlet()
    assert (
        await TurnRecorder(log, outlet=outlet).write(*turn(1), np.zeros(160, np.float32))
        is WriteResult.DROPPED
    )
    assert [e["code"] for e in outlet.events] == ["trajectory_dropped"]


def test_the_trajectory_log_writes_through_its_buffer() -> None:
    log = TrajectoryLog(None, buffer_turns=7, buffer_bytes=1234, write_timeout_s=0.5)  # type: ignore[arg-type]
    assert log.write_buffer.max_turns == 7 and log.write_buffer.max_bytes == 1234
    assert log.write_buffer.write_timeout_s == 0.5 and log.write_buffer.trajectory is log


# ------------------------------------------------------------------------------- a real Redis, stopped


@pytest.fixture
async def faulty_server(redis_process: RedisProcess, silero: SileroVAD) -> AsyncIterator[SimpleNamespace]:
    client = aioredis.Redis.from_url(redis_process.url)
    services = make_services(tts_enabled=False)
    # the real dialogue engine on the same Redis: its history must survive the outage too
    llm = ScriptedChatModel(reply="I hear you. Go on.")
    services.dialogue = await DialogueEngine.create(Settings(), client, llm=llm, key_prefix="fault")
    services.dialogue.graph.checkpointer.retry_s = 0.05
    services.trajectory = TrajectoryLog(client, write_timeout_s=1.0, dialogue_model="fake-llm@1")
    services.trajectory.write_buffer.retry_s = 0.05
    services.trajectory.write_buffer.max_retry_s = 0.2
    async with serving(services, silero) as server:
        yield SimpleNamespace(
            url=server.url, log=services.trajectory, redis=redis_process, dialogue=services.dialogue
        )
    await services.trajectory.aclose()
    await services.dialogue.aclose()
    await client.aclose()


async def typed_turn(ws: Any, text: str) -> list[Any]:
    seen: list[Any] = []
    await ws.send(f'{{"type": "input.text", "text": "{text}"}}')
    await recv_until(ws, "assistant.done", seen)
    return seen


async def converse_through_an_outage(server: SimpleNamespace) -> tuple[str, list[Any]]:
    """Two turns with Redis up, three with it stopped, Redis started again, one more turn."""
    session_id = f"fault-{uuid.uuid4().hex[:8]}"
    seen: list[Any] = []
    async with connect(server.url) as ws:
        await start(ws, session_id=session_id)
        for n in (1, 2):
            seen += await typed_turn(ws, f"before {n}")
        await asyncio.to_thread(server.redis.stop)
        for n in (1, 2, 3):
            seen += await typed_turn(ws, f"during {n}")
        assert server.log.write_buffer.pending == 3
        await asyncio.to_thread(server.redis.start)
        for _ in range(200):
            if server.log.write_buffer.pending == 0:
                break
            await asyncio.sleep(0.05)
        seen += await typed_turn(ws, "after")
    for _ in range(200):  # a pooled connection from before the restart may have failed once
        if server.log.write_buffer.pending == 0:
            break
        await asyncio.sleep(0.05)
    return session_id, seen


async def test_a_redis_outage_loses_no_turn_and_fails_none(faulty_server: SimpleNamespace) -> None:
    session_id, seen = await converse_through_an_outage(faulty_server)
    assert not events_of(seen, "error")  # every turn was answered
    assert len(events_of(seen, "assistant.done")) == 6
    records = await faulty_server.log.read(session_id)
    heard = [r.transcript for r in records if r.speaker == "user"]
    assert heard == ["before 1", "before 2", "during 1", "during 2", "during 3", "after"]
    assert [r.speaker for r in records] == ["user", "assistant"] * 6
    turn_ids = [e["turn_id"] for e in events_of(seen, "assistant.done")]
    assert [r.turn_id for r in records[::2]] == turn_ids  # in the order the turns ended
    # the dialogue history: every turn, in memory during the outage and in Redis once it is back
    assert [t["user_text"] for t in await faulty_server.dialogue.history(session_id)] == heard
    assert await faulty_server.dialogue.graph.checkpointer.flush(10.0)
    client = aioredis.Redis.from_url(faulty_server.redis.url)
    stored = await DialogueEngine.create(Settings(), client, llm=ScriptedChatModel(), key_prefix="fault")
    assert [t["user_text"] for t in await stored.history(session_id)] == heard
    await stored.aclose()
    await client.aclose()


async def test_the_client_is_warned_of_turns_waiting_for_the_log(faulty_server: SimpleNamespace) -> None:
    _, seen = await converse_through_an_outage(faulty_server)
    warnings = events_of(seen, "warning")
    assert [w["code"] for w in warnings] == ["trajectory_buffered"] * 3
    assert [w.get("message", "") != "" for w in warnings] == [True] * 3


async def test_a_session_without_consent_buffers_nothing_in_an_outage(faulty_server: SimpleNamespace) -> None:
    session_id = f"fault-off-{uuid.uuid4().hex[:8]}"
    async with connect(faulty_server.url) as ws:
        started = await start(ws, session_id=session_id, consent=False)
        assert started["consent"] is False
        await asyncio.to_thread(faulty_server.redis.stop)
        seen = await typed_turn(ws, "nobody may keep this")
        assert faulty_server.log.write_buffer.pending == 0
        await asyncio.to_thread(faulty_server.redis.start)
    assert not events_of(seen, "warning") and not events_of(seen, "error")
    assert await faulty_server.log.read(session_id) == []
