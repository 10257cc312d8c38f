"""What one client may ask of the server: the token bucket and frame guard (on a fake clock), session slots,
and over a real websocket: the message rate, sessions per server and per address, the idle timeout and
keepalive pings."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.voice.test_voice_session import TIMEOUT, events_of, recv_until, start, text_turn
from voice.limits import Admission, FrameGuard, SessionSlots, TokenBucket
from voice.protocol import ErrorCode


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------ token bucket


def test_the_bucket_starts_full_and_refuses_beyond_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(7)] == [True] * 5 + [False] * 2
    assert bucket.tokens == pytest.approx(0)


def test_the_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    for _ in range(5):
        bucket.take()
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 60  # a long pause fills it to the burst, not beyond
    assert bucket.tokens == pytest.approx(5)
    assert sum(bucket.take() for _ in range(10)) == 5


def test_a_refused_take_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=3, clock=clock)
    assert bucket.take(2)
    assert not bucket.take(2)
    assert bucket.tokens == pytest.approx(1)
    assert bucket.take(1)


def test_the_bucket_sustains_exactly_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=50, burst=1, clock=clock)
    admitted = 0
    for _ in range(1000):  # 10 s of attempts every 10 ms: 100 a second asked, 50 a second given
        admitted += bucket.take()
        clock.now += 0.01
    assert admitted == pytest.approx(500, abs=2)


def test_a_clock_stepping_back_adds_no_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    bucket.take()
    bucket.take()
    clock.now -= 5
    assert not bucket.take()
    clock.now += 0.1  # measured from the stepped-back time: one token
    assert bucket.take()


def test_rate_zero_means_no_limit_and_bad_arguments_are_refused() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take() for _ in range(10_000))
    with pytest.raises(ValueError):
        TokenBucket(rate=-1, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


def test_the_guard_reports_the_first_refusal_then_at_most_once_a_second() -> None:
    clock = FakeClock()
    guard = FrameGuard(rate=1, burst=2, clock=clock)
    seen = [guard.admit() for _ in range(5)]
    assert seen == [
        Admission.ADMIT,
        Admission.ADMIT,
        Admission.REFUSE_AND_REPORT,
        Admission.REFUSE,
        Admission.REFUSE,
    ]
    assert guard.refused == 3
    clock.now += 0.5  # half a token: still refused, and too soon to say so again
    assert guard.admit() is Admission.REFUSE
    clock.now += 0.6  # a token, and over a second since the report
    assert guard.admit() is Admission.ADMIT
    assert guard.admit() is Admission.REFUSE_AND_REPORT
    assert guard.refused == 5


# ----------------------------------------------------------------------------------------- session slots


def test_slots_limit_the_server_and_each_address() -> None:
    slots = SessionSlots(max_total=3, max_per_client=2)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    refused = slots.acquire("a")
    assert refused is not None and refused.code == ErrorCode.TOO_MANY_SESSIONS
    assert slots.acquire("b") is None
    refused = slots.acquire("c")
    assert refused is not None and refused.code == ErrorCode.SERVER_BUSY
    assert (slots.open, slots.of("a"), slots.of("c")) == (3, 2, 0)  # a refusal takes no slot
    slots.release("a")
    assert slots.acquire("c") is None
    for client in ("a", "b", "c"):
        slots.release(client)
    assert slots.open == 0


def test_zero_slots_means_no_limit() -> None:
    slots = SessionSlots(0, 0)
    assert all(slots.acquire("a") is None for _ in range(1000))


# ---------------------------------------------------------------------------------------- a real server


@pytest.fixture
def limited_server(server_factory: Callable[..., Any]) -> Callable[..., Any]:
    return server_factory


async def test_frames_over_the_rate_are_dropped_with_one_error_and_the_session_goes_on(
    limited_server,
) -> None:
    server = await limited_server(message_rate=5, message_burst=20)
    async with connect(server.url) as ws:
        await start(ws)  # 1 frame
        for _ in range(60):  # 19 more fit the burst; the rest (about 40) are dropped
            await ws.send(b"\x00\x00" * 160)
        seen: list[Any] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while True:
                    frame = await ws.recv()
                    seen.append(json.loads(frame) if isinstance(frame, str) else frame)
        errors = events_of(seen, "error")
        assert [e["code"] for e in errors] == ["rate_limited"]  # one error for the whole flood
        dropped = int(errors[0]["message"].split(": ")[1].split()[0])
        assert dropped >= 1
        await asyncio.sleep(0.5)  # refills a couple of tokens: the session still answers
        seen = await text_turn(ws, "still here?")
        assert events_of(seen, "user.perception")[0]["transcript"] == "still here?"


async def test_exactly_the_frames_beyond_the_burst_are_dropped(limited_server) -> None:
    server = await limited_server(message_rate=1e-9, message_burst=4)  # no refill within the test
    async with connect(server.url) as ws:
        await start(ws)  # frame 1
        for text in ("one", "two", "three", "four", "five"):  # frames 2-4 admitted, 5-6 dropped
            await ws.send(json.dumps({"type": "input.text", "text": text}))
        seen: list[Any] = []
        await recv_until(ws, "assistant.done", seen)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                while True:
                    frame = await ws.recv()
                    seen.append(json.loads(frame) if isinstance(frame, str) else frame)
    heard = [e["transcript"] for e in events_of(seen, "user.perception")]
    assert heard[-1] == "three" and "four" not in heard and "five" not in heard
    assert [e["code"] for e in events_of(seen, "error")] == ["rate_limited"]


async def test_no_rate_limit_when_the_rate_is_zero(limited_server) -> None:
    server = await limited_server(message_rate=0, message_burst=1)
    async with connect(server.url) as ws:
        await start(ws)
        for _ in range(200):
            await ws.send(b"\x00\x00" * 16)
        seen = await text_turn(ws)
        assert not events_of(seen, "error")


async def refused_with(url: str) -> tuple[dict[str, Any], int | None]:
    async with connect(url) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        return event, ws.close_code


async def test_sessions_over_the_server_limit_get_server_busy_and_1013(limited_server) -> None:
    server = await limited_server(max_sessions=2, max_sessions_per_client=0)
    async with connect(server.url) as first, connect(server.url) as second:
        await start(first)
        await start(second)
        event, code = await refused_with(server.url)
        assert event["type"] == "error" and event["code"] == "server_busy" and code == 1013
        assert "2 sessions" in event["message"]
        await text_turn(first)  # the open sessions are untouched
    # once they have closed, a new connection gets a session again
    for _ in range(50):
        with contextlib.suppress(AssertionError):
            async with connect(server.url) as ws:
                started = await start(ws)
                assert started["type"] == "session.started"
                break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("no session after the others closed")


async def test_sessions_over_the_per_address_limit_get_too_many_sessions(limited_server) -> None:
    server = await limited_server(max_sessions=0, max_sessions_per_client=1)
    async with connect(server.url) as ws:
        await start(ws)
        event, code = await refused_with(server.url)
        assert (event["code"], code) == ("too_many_sessions", 1013)
        await text_turn(ws)


async def test_an_idle_connection_gets_idle_timeout_and_is_closed(limited_server) -> None:
    server = await limited_server(idle_timeout_s=0.5)
    async with connect(server.url) as ws:
        await start(ws)
        await text_turn(ws)  # activity keeps it open ...
        event = await recv_until(ws, "error")  # ... silence does not
        assert event["code"] == "idle_timeout"
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1000


async def test_a_client_that_does_not_answer_pings_is_closed(limited_server) -> None:
    """A raw socket that completes the handshake and then never reads: the server's pings go unanswered."""
    server = await limited_server(ping_interval_s=0.3, ping_timeout_s=0.3)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    def silent_client() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(request.encode())
            received = b""
            while True:  # read (never answering) until the server closes the TCP connection
                chunk = sock.recv(4096)
                if not chunk:
                    return received
                received += chunk

    received = await asyncio.wait_for(asyncio.to_thread(silent_client), TIMEOUT)
    assert received.startswith(b"HTTP/1.1 101")
    assert b"\x89" in received  # a ping frame (FIN + opcode 9) came before the close


async def test_pings_off_keep_a_silent_client(limited_server) -> None:
    server = await limited_server(ping_interval_s=0, ping_timeout_s=0)
    async with connect(server.url, ping_interval=None) as ws:
        await start(ws)
        await asyncio.sleep(0.8)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)  # nothing was sent, nothing closed
        assert ws.close_code is None
