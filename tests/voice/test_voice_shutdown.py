"""Stopping the server: SIGTERM drains the sessions (replies in progress finish, then a 1001 close), the
drain deadline cuts a reply that would not finish, and buffered trajectory records are written first."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.voice.test_voice_session import (
    ANY_SESSION,
    TIMEOUT,
    events_of,
    http_get,
    recv_until,
    start,
    text_turn,
    wait_for_audio,
    wait_for_close,
)
from tests.voice.voice_fakes import LONG_REPLY, FakeTrajectory, free_port, make_services, serving
from voice.records import RecordBuffer, TurnRecord
from voice.vad import SileroVAD

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def server_process(tmp_path: Path, *args: str) -> AsyncIterator[SimpleNamespace]:
    """``run_fake_server`` in a process of its own, once it answers ``/health``; killed at the end if it is
    still running. ``log()`` is what it printed."""
    port = free_port()
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")  # closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.voice.run_fake_server", str(port), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(150):
            with contextlib.suppress(OSError):
                status, _, _ = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/health")
                if status == 200:
                    break
            await asyncio.sleep(0.2)
        yield SimpleNamespace(proc=proc, url=f"ws://127.0.0.1:{port}/ws", log=log_path.read_text)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def long_reply_playing(ws: ClientConnection, seen: list[Any]) -> None:
    await start(ws)
    await ws.send(json.dumps({"type": "input.text", "text": "tell me something long"}))
    await wait_for_audio(ws, seen)


async def test_sigterm_lets_the_reply_in_progress_finish_then_closes(tmp_path: Path) -> None:
    async with server_process(tmp_path) as server:
        async with connect(server.url) as ws:
            seen: list[Any] = []
            await long_reply_playing(ws, seen)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            with pytest.raises((OSError, InvalidStatus)):  # draining: no new sessions
                async with connect(server.url, open_timeout=5):
                    pass
            done = await recv_until(ws, "assistant.done", seen)
            await asyncio.wait_for(wait_for_close(ws), TIMEOUT)
            assert ws.close_code == 1001  # going away
        assert await asyncio.to_thread(server.proc.wait, TIMEOUT) == 0
        log = server.log()
    [perception] = events_of(seen, "user.perception")
    assert done["turn_id"] == perception["turn_id"]
    assert "".join(d["text"] for d in events_of(seen, "assistant.delta")) == LONG_REPLY
    assert not events_of(seen, "assistant.interrupted")
    assert "stopped cleanly" in log


async def test_sigterm_closes_an_idle_session_at_once(tmp_path: Path) -> None:
    async with server_process(tmp_path) as server:
        async with connect(server.url) as ws:
            await start(ws)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), 3)
            assert ws.close_code == 1001
        assert await asyncio.to_thread(server.proc.wait, TIMEOUT) == 0
        assert "stopped cleanly" in server.log()


async def test_a_second_sigterm_stops_without_waiting(tmp_path: Path) -> None:
    async with server_process(tmp_path) as server:
        async with connect(server.url) as ws:
            seen: list[Any] = []
            await long_reply_playing(ws, seen)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(wait_for_close(ws), 2)  # the reply had seconds left to play
            assert ws.close_code == 1001
        assert not events_of(seen, "assistant.done")
        assert await asyncio.to_thread(server.proc.wait, TIMEOUT) == 0
        assert "stopped cleanly" in server.log()


# ----------------------------------------------------------------------------------- in this process


def stoppable_server(silero: SileroVAD, services: Any) -> Any:
    """A real server over ``services`` that drains when ``.stop`` is set, as it does on SIGTERM."""
    return serving(services, silero, stop=asyncio.Event())


async def test_the_drain_deadline_cuts_a_reply_that_would_not_finish(silero: SileroVAD) -> None:
    services = make_services(drain_timeout_s=1.0)  # the long reply plays for about 5 s
    async with stoppable_server(silero, services) as server:
        async with connect(server.url) as ws:
            seen: list[Any] = []
            await long_reply_playing(ws, seen)
            server.stop.set()
            interrupted = await recv_until(ws, "assistant.interrupted", seen)
            await asyncio.wait_for(wait_for_close(ws), TIMEOUT)
            assert ws.close_code == 1001
        await asyncio.wait_for(asyncio.shield(server.task), TIMEOUT)
    turn_id = events_of(seen, "user.perception")[0]["turn_id"]
    heard = interrupted["heard_text"]
    assert interrupted["turn_id"] == turn_id and not events_of(seen, "assistant.done")
    assert heard and LONG_REPLY.startswith(heard) and heard != LONG_REPLY
    # Cut as by barge-in: the history and the log keep only what was heard.
    assert services.dialogue.interrupted == [(ANY_SESSION, turn_id, heard)]
    user, assistant = [r for r in services.trajectory.records if r.turn_id == turn_id]
    assert user.speaker == "user" and assistant.interrupted and assistant.transcript == heard


@dataclass
class UnreachableLog(FakeTrajectory):
    """A trajectory log that refuses connections while ``down``."""

    down: bool = True

    async def append(self, record: TurnRecord) -> str:
        if self.down:
            raise ConnectionRefusedError("the log is down")
        return await super().append(record)


async def test_records_still_buffered_are_written_before_serve_returns(silero: SileroVAD) -> None:
    services = make_services()
    log = UnreachableLog()
    log.write_buffer = RecordBuffer(log, retry_s=60)  # type: ignore[attr-defined]  # no retry meanwhile
    services.trajectory = log
    async with stoppable_server(silero, services) as server:
        async with connect(server.url) as ws:
            await start(ws)
            seen = await text_turn(ws, "hello")
            assert [e["code"] for e in events_of(seen, "warning")] == ["trajectory_buffered"]
            assert log.records == [] and log.write_buffer.pending == 1  # type: ignore[attr-defined]
            log.down = False
            server.stop.set()
            await asyncio.wait_for(wait_for_close(ws), TIMEOUT)
        await asyncio.wait_for(asyncio.shield(server.task), TIMEOUT)
        assert [r.speaker for r in log.records] == ["user", "assistant"]
    await log.write_buffer.aclose()  # type: ignore[attr-defined]
