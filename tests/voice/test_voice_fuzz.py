"""Fuzzing the websocket protocol with Hypothesis: malformed JSON, unknown types, wrong and missing fields,
odd-length PCM, huge frames, invalid UTF-8, random bytes, fragmented messages, in any order.

Two levels:

- the parser (:func:`voice.protocol.parse_text_frame`, :func:`~voice.protocol.check_audio_frame`): every
  input gives a typed message or a :class:`~voice.protocol.ProtocolError` with a documented code, never
  another exception;
- a real server over a real websocket (fake models, in a thread of its own): after each random sequence of
  frames, every ``error`` has a documented code (never ``internal_error``), the server logged no error, a
  connection closes only for a frame that must close it (1000 ``session.end``, 1007 invalid UTF-8, 1009
  beyond the hard size limit), an open session still answers ``session.start`` and a typed turn, and a new
  connection still gets a session.

Case counts: ``EMO_FUZZ_EXAMPLES`` (default 1000) per parser property, ``EMO_FUZZ_SERVER_EXAMPLES``
(default 200) random sequences against the server; each test prints how many it ran (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.voice.voice_fakes import FakeTTS, free_port, make_services
from voice import protocol as proto
from voice.protocol import ErrorCode, ProtocolError
from voice.server import serve
from voice.vad import SileroVAD

PARSER_EXAMPLES = int(os.environ.get("EMO_FUZZ_EXAMPLES", "1000"))
SERVER_EXAMPLES = int(os.environ.get("EMO_FUZZ_SERVER_EXAMPLES", "200"))
MAX_TEXT_CHARS = 200
MAX_MESSAGE_BYTES = 64 * 1024
HARD_LIMIT = 4 * MAX_MESSAGE_BYTES  # voice.server: beyond it the websocket layer closes with 1009
ERROR_CODES = frozenset(v for k, v in vars(ErrorCode).items() if k.isupper())
CLIENT_TYPES = ["session.start", "input.flush", "input.text", "session.end"]
TIMEOUT = 20
SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

# ------------------------------------------------------------------------------------------ strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
session_ids = st.one_of(
    st.text(alphabet="abcdefXYZ0123456789_.:-", min_size=0, max_size=140),
    st.text(max_size=20),
    json_values,
)
sample_rates = st.one_of(
    st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    st.integers(min_value=0, max_value=100_000),
    st.floats(allow_nan=True, allow_infinity=True),
    json_values,
)
message_dicts = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(CLIENT_TYPES), st.text(max_size=20), json_values)},
    optional={
        "session_id": session_ids,
        "sample_rate": sample_rates,
        "consent": json_values,
        "text": st.one_of(st.text(max_size=MAX_TEXT_CHARS + 20), json_values),
    },
)
# ... plus fields of any name and value (unknown extra fields are ignored by the server)
message_dicts = st.tuples(message_dicts, st.dictionaries(st.text(max_size=8), json_values, max_size=3)).map(
    lambda pair: {**pair[1], **pair[0]}
)
text_frames = st.one_of(
    message_dicts.map(lambda d: json.dumps(d, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    st.integers(min_value=1, max_value=200_000).map(
        lambda n: '{"type": "input.text", "text": "' + "x" * n + '"}'
    ),
    st.sampled_from(['{"type": "input.flush"', '{"type": "session.start",}', "NaN", "null", "{}", '""']),
)

valid_messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("session.start")},
        optional={
            "sample_rate": st.sampled_from([8000, 16000, 24000, 44100, 48000]),
            "session_id": st.text(alphabet="abc123_.:-", min_size=1, max_size=20),
            "consent": st.booleans(),
        },
    ),
    st.builds(lambda t: {"type": "input.text", "text": t}, st.text(min_size=1, max_size=30)),
    st.just({"type": "input.flush"}),
)


# ---------------------------------------------------------------------------------------- parser level


@pytest.fixture(scope="module")
def parser_cases() -> Iterator[Counter[str]]:
    seen: Counter[str] = Counter()
    yield seen
    print(f"\nparser fuzz cases: {dict(seen)}")


def test_every_text_frame_parses_or_gives_a_typed_error(parser_cases: Counter[str]) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=PARSER_EXAMPLES, deadline=None, suppress_health_check=SLOW_IS_FINE)
    @given(st.one_of(text_frames, valid_messages.map(json.dumps)))
    def check(frame: str) -> None:
        try:
            msg = proto.parse_text_frame(
                frame, max_text_chars=MAX_TEXT_CHARS, max_message_bytes=MAX_MESSAGE_BYTES
            )
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES and exc.code != ErrorCode.INTERNAL_ERROR
            assert isinstance(exc.message, str) and exc.message
            outcomes[exc.code] += 1
            return
        outcomes[type(msg).__name__] += 1
        if isinstance(msg, proto.SessionStart):
            assert proto.MIN_SAMPLE_RATE <= msg.sample_rate <= proto.MAX_SAMPLE_RATE
            assert isinstance(msg.sample_rate, int) and not isinstance(msg.sample_rate, bool)
            assert msg.session_id is None or 1 <= len(msg.session_id) <= proto.MAX_SESSION_ID_CHARS
            assert msg.consent in (None, True, False)
        elif isinstance(msg, proto.InputText):
            assert msg.text and msg.text == msg.text.strip() and len(msg.text) <= MAX_TEXT_CHARS
        else:
            assert isinstance(msg, proto.InputFlush | proto.SessionEnd)

    check()
    print(f"\ntext frames fuzzed: {outcomes.total()} {dict(outcomes)}")
    parser_cases["text frames"] += outcomes.total()
    assert outcomes.total() >= PARSER_EXAMPLES
    assert len(outcomes) >= 6, outcomes  # the strategies reach most outcomes, not one error over and over


def test_every_binary_frame_is_pcm_or_gives_a_typed_error(parser_cases: Counter[str]) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=PARSER_EXAMPLES, deadline=None, suppress_health_check=SLOW_IS_FINE)
    @given(
        st.one_of(st.binary(max_size=4000), st.integers(0, 3 * MAX_MESSAGE_BYTES).map(lambda n: b"\x01" * n))
    )
    def check(frame: bytes) -> None:
        try:
            proto.check_audio_frame(frame, max_message_bytes=MAX_MESSAGE_BYTES)
        except ProtocolError as exc:
            expected = ErrorCode.MESSAGE_TOO_LARGE if len(frame) > MAX_MESSAGE_BYTES else ErrorCode.ODD_BYTES
            assert exc.code == expected
            outcomes[exc.code] += 1
            return
        assert len(frame) % 2 == 0 and len(frame) <= MAX_MESSAGE_BYTES
        samples = proto.pcm16_to_float32(frame)
        assert samples.shape == (len(frame) // 2,) and samples.dtype == np.float32
        assert np.all(samples >= -1.0) and np.all(samples < 1.0)
        outcomes["pcm"] += 1

    check()
    print(f"\nbinary frames fuzzed: {outcomes.total()} {dict(outcomes)}")
    parser_cases["binary frames"] += outcomes.total()
    assert outcomes.total() >= PARSER_EXAMPLES
    assert set(outcomes) == {"pcm", ErrorCode.ODD_BYTES, ErrorCode.MESSAGE_TOO_LARGE}, outcomes


# ---------------------------------------------------------------------------------------- server level


class ServerThread:
    """The real server over the fake models, on an event loop in its own thread, collecting the records of
    every ERROR its loggers write."""

    def __init__(self, vad: SileroVAD) -> None:
        self.services = make_services(max_text_chars=MAX_TEXT_CHARS, max_message_bytes=MAX_MESSAGE_BYTES)
        self.services.tts = FakeTTS(seconds_per_word=0.01)  # short replies: many sequences a minute
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.vad = vad
        self.errors: list[logging.LogRecord] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(
            serve(self.services, "127.0.0.1", self.port, ready=ready, vad=self.vad, handle_signals=False)
        )
        await ready.wait()
        self._ready.set()
        await self._stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors.append(record)

    def __enter__(self) -> ServerThread:
        self._handler = logging.Handler()
        self._handler.emit = self.emit  # type: ignore[method-assign]
        for name in ("voice", "websockets"):
            logging.getLogger(name).addHandler(self._handler)
        self._thread.start()
        assert self._ready.wait(30), "the fuzz server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        for name in ("voice", "websockets"):
            logging.getLogger(name).removeHandler(self._handler)


@pytest.fixture(scope="module")
def fuzz_server(silero: SileroVAD) -> Iterator[ServerThread]:
    with ServerThread(silero) as server:
        yield server


LARGE_PCM = ("bytes", b"\x00" * (MAX_MESSAGE_BYTES + 2))  # message_too_large: the session stays
LARGE_ODD_PCM = ("bytes", b"\x00" * (MAX_MESSAGE_BYTES + 1))
HUGE_PCM = ("bytes", b"\x00" * (HARD_LIMIT + 2))  # beyond the hard limit: closed with 1009
HUGE_TEXT = ("text", "x" * (HARD_LIMIT + 1))
INVALID_UTF8 = ("invalid_utf8", b'{"type": "input.text", "text": "\xff\xfe"}')  # closed with 1007
SESSION_END = ("text", json.dumps({"type": "session.end"}))  # closed with 1000
START = ("text", json.dumps({"type": "session.start"}))

# What a sequence sends: ("text", str), ("bytes", bytes), ("invalid_utf8", bytes: a text frame that is
# not UTF-8) or ("fragments", [str, ...]: one text message in several frames).
pcm = st.one_of(
    st.binary(max_size=3000),  # random bytes, odd or even
    st.integers(1, 3200).map(
        lambda n: np.random.default_rng(n).integers(-3000, 3000, n, dtype="<i2").tobytes()
    ),
    st.integers(1, 20).map(lambda n: b"\x00\x00" * 160 * n),  # silence
)
frames = st.one_of(
    text_frames.map(lambda t: ("text", t)),
    valid_messages.map(lambda m: ("text", json.dumps(m))),
    valid_messages.map(lambda m: ("text", json.dumps(m))),
    pcm.map(lambda b: ("bytes", b)),
    pcm.map(lambda b: ("bytes", b)),
    st.sampled_from([LARGE_PCM, LARGE_ODD_PCM]),
    st.sampled_from([HUGE_PCM, HUGE_TEXT, INVALID_UTF8, SESSION_END]),
    st.lists(st.text(max_size=20), min_size=1, max_size=4).map(lambda parts: ("fragments", parts)),
    valid_messages.map(json.dumps).map(lambda s: ("fragments", [s[: len(s) // 2], s[len(s) // 2 :]])),
)
sequences = st.lists(frames, min_size=1, max_size=12)


def closing_code(frame: tuple[str, Any]) -> int | None:
    """The close code a frame must cause (None: the connection stays open)."""
    kind, payload = frame
    size = len(payload) if kind == "bytes" else len(str(payload).encode("utf-8", "surrogatepass"))
    if kind in ("text", "bytes") and size > HARD_LIMIT:
        return 1009
    if kind == "invalid_utf8":
        return 1007
    if kind == "text":
        try:
            if isinstance(msg := json.loads(payload), dict) and msg.get("type") == "session.end":
                return 1000
        except (ValueError, RecursionError):
            pass
    if kind == "fragments" and "".join(payload).replace(" ", "") == '{"type":"session.end"}':
        return 1000
    return None


async def send_frame(ws: ClientConnection, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    if kind == "invalid_utf8":
        await ws.send(payload, text=True)
    elif kind == "fragments":
        await ws.send(list(payload))
    else:
        await ws.send(payload)


async def read_until(ws: ClientConnection, events: list[dict[str, Any]], done: Any) -> dict[str, Any]:
    """Receive (JSON events into ``events``, audio dropped) until ``done(event)``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                event = json.loads(frame)
                events.append(event)
                if done(event):
                    return event


async def run_sequence(url: str, sequence: list[tuple[str, Any]], stats: Counter[str]) -> None:
    events: list[dict[str, Any]] = []
    expected_closes = {code for frame in sequence if (code := closing_code(frame)) is not None}
    async with connect(url, max_size=None) as ws:
        for frame in sequence:
            try:
                await send_frame(ws, frame)
            except ConnectionClosed:
                break
            stats["frames"] += 1
        if expected_closes:
            # The connection must close, and only for one of the frames that close it.
            with pytest.raises(ConnectionClosed):
                await read_until(ws, events, lambda e: False)
            assert ws.close_code in expected_closes, (ws.close_code, expected_closes)
            stats[f"closed {ws.close_code}"] += 1
        else:
            # The session still answers: session.start (started, or already started), then a typed turn.
            await ws.send(json.dumps({"type": "session.start"}))
            await read_until(
                ws,
                events,
                lambda e: (
                    e["type"] == "session.started"
                    or (e["type"] == "error" and e["code"] == ErrorCode.ALREADY_STARTED)
                ),
            )
            await ws.send(json.dumps({"type": "input.text", "text": "are you still there"}))
            perceived = await read_until(
                ws,
                events,
                lambda e: e["type"] == "user.perception" and e["transcript"] == "are you still there",
            )
            await read_until(
                ws, events, lambda e: e["type"] == "assistant.done" and e["turn_id"] == perceived["turn_id"]
            )
            stats["probed"] += 1
    for event in events:
        if event["type"] == "error":
            assert event["code"] in ERROR_CODES and event["code"] != ErrorCode.INTERNAL_ERROR, event
            stats[f"error {event['code']}"] += 1
    # ... and the server still serves a new connection.
    async with connect(url) as fresh:
        await fresh.send(json.dumps({"type": "session.start"}))
        started = json.loads(await asyncio.wait_for(fresh.recv(), TIMEOUT))
        assert started["type"] == "session.started", started


def test_random_frame_sequences_never_break_a_session_or_the_server(fuzz_server: ServerThread) -> None:
    stats: Counter[str] = Counter()

    @settings(max_examples=SERVER_EXAMPLES, deadline=None, suppress_health_check=SLOW_IS_FINE)
    @given(sequences)
    # Run every time, beside the random ones: each way of closing, and the errors that keep the session.
    @example([INVALID_UTF8])
    @example([START, SESSION_END, ("bytes", b"\x00\x00")])
    @example([START, ("bytes", b"\x01" * 321), LARGE_PCM, HUGE_PCM])
    @example([("bytes", b"\x00\x00"), START, ("text", "{"), ("text", '{"type": 7}'), LARGE_ODD_PCM])
    @example(
        [
            START,
            ("fragments", ['{"type": "input.', 'text", "text": "hi"}']),
            ("text", '{"type":"input.flush"}'),
        ]
    )
    def check(sequence: list[tuple[str, Any]]) -> None:
        stats["sequences"] += 1
        asyncio.run(run_sequence(fuzz_server.url, sequence, stats))
        assert not fuzz_server.errors, [r.getMessage() for r in fuzz_server.errors]

    check()
    print(f"\nserver fuzz: {dict(sorted(stats.items()))}")
    assert stats["sequences"] >= SERVER_EXAMPLES
    assert stats["probed"] > 0 and {"closed 1000", "closed 1007", "closed 1009"} <= set(stats)
    assert stats["frames"] >= stats["sequences"]
