"""A command-line and library client for the voice websocket.

    python -m voice.client FILE.wav [--url ws://HOST:8765/ws] [--realtime] [--session ID] [--out reply.wav]
    python -m voice.client --text "I missed the bus again." --out reply.wav
    EMO_VOICE__AUTH_TOKEN=... python -m voice.client FILE.wav     # a server that needs its access token

The file (wav/ogg/flac, any rate, mono or stereo: channels are averaged) is streamed as PCM16 at its own rate,
which ``session.start`` declares; ``--realtime`` paces it like a microphone. At the end the client sends
``input.flush`` unless the VAD has already ended the turn, prints the events as they arrive, and stops at the
first ``assistant.done`` (or a turn-ending ``error``); with both FILE and ``--text`` the text is sent once the
file's turn has been answered. ``--out`` saves the reply audio as a WAV file. Exit status: 0; 1 on an
``error`` event, an unreachable server or no ``assistant.done`` in time; 2 for an unreadable file or a URL
that is not a websocket endpoint (or refuses the handshake, e.g. 401 for a missing or wrong token).
The access token (``--token``, default ``EMO_VOICE__AUTH_TOKEN``) goes in ``Authorization: Bearer``.

As a library (tests, ``bench/``)::

    conv = await converse("ws://127.0.0.1:8765/ws", audio, 16000)
    conv.first("user.perception")["emotion"]["label"]; conv.reply_pcm; conv.events[0].t
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from voice.protocol import float32_to_pcm16

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
TOKEN_ENV = "EMO_VOICE__AUTH_TOKEN"  # the server's setting, read as the client's default token
# error codes after which no reply follows for the turn
TURN_ENDING_ERRORS = frozenset({"no_speech", "audio_error", "turn_failed", "session_failed"})


@dataclass
class TimedEvent:
    """One received frame: a JSON event or a chunk of reply PCM, with its arrival time.

    ``t`` is seconds since the client started sending input (after ``session.started``).
    """

    t: float
    event: dict[str, Any] | None = None
    audio: bytes | None = None

    @property
    def type(self) -> str:
        return "audio" if self.event is None else str(self.event.get("type"))


@dataclass
class Conversation:
    """Everything one :func:`converse` call received."""

    session_id: str
    resumed: bool
    output_sample_rate: int
    events: list[TimedEvent] = field(default_factory=list)
    input_done_t: float = 0.0  # when the last input (audio or flush or text) was sent

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.event for e in self.events if e.event is not None and e.event.get("type") == kind]

    def first(self, kind: str) -> dict[str, Any] | None:
        found = self.of_type(kind)
        return found[0] if found else None

    def time_of(self, kind: str) -> float | None:
        """Arrival time of the first frame of ``kind`` (``"audio"`` for PCM)."""
        return next((e.t for e in self.events if e.type == kind), None)

    @property
    def reply_pcm(self) -> bytes:
        return b"".join(e.audio for e in self.events if e.audio is not None)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.of_type("error")


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 mono (channels averaged) and its sample rate."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32), int(rate)


async def _receive(ws: ClientConnection, conv: Conversation, t0: float, state: dict[str, Any]) -> None:
    """Collect frames; set ``state['finished']`` at the first reply end after the input is complete."""
    try:
        async for frame in ws:
            now = time.monotonic() - t0
            if isinstance(frame, bytes):
                item = TimedEvent(now, audio=frame)
            else:
                item = TimedEvent(now, event=json.loads(frame))
            conv.events.append(item)
            if state["on_event"] is not None:
                state["on_event"](item)
            kind = item.type
            if kind in ("speech.started", "speech.stopped"):
                state["last_vad"] = kind
            ends_turn = kind == "assistant.done" or (
                kind == "error" and item.event is not None and item.event.get("code") in TURN_ENDING_ERRORS
            )
            if ends_turn:
                state["turn_ended"].set()
                if state["input_done"].is_set():
                    state["finished"].set()
    except ConnectionClosed:
        pass
    finally:
        state["finished"].set()


async def converse(
    url: str,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    *,
    text: str | None = None,
    session_id: str | None = None,
    realtime: bool = False,
    chunk_ms: int = 20,
    flush: bool = True,
    timeout: float = 120.0,
    on_event: Any = None,
    token: str | None = None,
) -> Conversation:
    """Run one user turn (audio and/or typed ``text``) and return what the server sent, timestamped.

    ``audio`` is float32 mono at ``sample_rate`` (the rate declared in ``session.start``). With ``flush``,
    ``input.flush`` follows the audio unless the VAD already ended the turn. Returns after the first
    ``assistant.done`` (or turn-ending ``error``) that arrives once all input was sent, or after ``timeout``.
    ``on_event(TimedEvent)`` is called as frames arrive. ``token`` is sent as ``Authorization: Bearer``.
    Raises :class:`RuntimeError` when the server answers ``session.start`` with an ``error`` (e.g.
    ``server_busy``), websockets' ``InvalidStatus`` when it refuses the handshake (401, 403, 404).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, max_size=None, additional_headers=headers) as ws:
        start: dict[str, Any] = {"type": "session.start", "sample_rate": sample_rate}
        if session_id:
            start["session_id"] = session_id
        await ws.send(json.dumps(start))
        started = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if started.get("type") == "error":
            raise RuntimeError(f"no session: {started.get('code')}: {started.get('message')}")
        if started.get("type") != "session.started":
            raise RuntimeError(f"session did not start: {started}")
        conv = Conversation(
            started["session_id"], bool(started["resumed"]), int(started["output_sample_rate"])
        )
        t0 = time.monotonic()
        conv.events.append(TimedEvent(0.0, event=started))
        if on_event is not None:
            on_event(conv.events[0])
        state: dict[str, Any] = {
            "finished": asyncio.Event(),
            "input_done": asyncio.Event(),
            "turn_ended": asyncio.Event(),
            "last_vad": None,
            "on_event": on_event,
        }
        receiver = asyncio.create_task(_receive(ws, conv, t0, state))
        try:
            if audio is not None:
                await stream_pcm(ws, audio, sample_rate, chunk_ms=chunk_ms, realtime=realtime)
                if flush and state["last_vad"] != "speech.stopped":
                    await ws.send(json.dumps({"type": "input.flush"}))
            if text is not None:
                if audio is not None:  # a new turn would cancel the file's: wait for its reply first
                    await _wait_for_answer(conv, state, timeout)
                await ws.send(json.dumps({"type": "input.text", "text": text}))
            conv.input_done_t = time.monotonic() - t0
            state["input_done"].set()
            if text is None and _answered_after_last_speech(conv):
                state["finished"].set()  # the VAD ended the turn and the reply came while streaming
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state["finished"].wait(), timeout)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "session.end"}))
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(receiver), 5.0)
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        return conv


async def stream_pcm(
    ws: ClientConnection, audio: np.ndarray, sample_rate: int, *, chunk_ms: int = 20, realtime: bool = False
) -> None:
    """Send float32 mono audio as PCM16 binary frames of ``chunk_ms``; paced like a microphone if
    ``realtime``."""
    step = max(1, sample_rate * chunk_ms // 1000)
    t_start = time.monotonic()
    for i, offset in enumerate(range(0, len(audio), step)):
        if realtime:
            delay = t_start + i * chunk_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send(float32_to_pcm16(audio[offset : offset + step]))


async def _wait_for_answer(conv: Conversation, state: dict[str, Any], timeout: float) -> None:
    """Wait (up to ``timeout``) until the turn in flight has been answered (``assistant.done`` or a
    turn-ending ``error``) or the connection has closed."""
    deadline = time.monotonic() + timeout
    while not state["finished"].is_set():
        state["turn_ended"].clear()
        if _answered_after_last_speech(conv):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        turn_ended = asyncio.ensure_future(state["turn_ended"].wait())
        closed = asyncio.ensure_future(state["finished"].wait())
        try:
            await asyncio.wait({turn_ended, closed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            turn_ended.cancel()
            closed.cancel()


def _answered_after_last_speech(conv: Conversation) -> bool:
    answered = False
    for item in conv.events:
        if item.type == "speech.started":
            answered = False
        elif item.type == "assistant.done" or (
            item.type == "error" and item.event is not None and item.event.get("code") in TURN_ENDING_ERRORS
        ):
            answered = True
    return answered


def describe(item: TimedEvent) -> str | None:
    """One readable line (or a few) for a received frame; None for audio (summarised at the end)."""
    ev = item.event
    if ev is None:
        return None
    kind = ev.get("type")
    head = f"[{item.t:7.2f}s] {kind}"
    if kind == "user.perception":
        emo = ev.get("emotion", {})
        top = sorted(emo.get("scores", {}).items(), key=lambda kv: -kv[1])[:3]
        tops = ", ".join(f"{k} {v:.2f}" for k, v in top)
        lines = [
            f"{head}  {ev.get('transcript', '')!r}",
            f"{'':12}emotion: {emo.get('label')} ({tops}); valence {emo.get('valence', 0):+.2f}, "
            f"arousal {emo.get('arousal', 0):+.2f}",
            f"{'':12}reasoning: {ev.get('reasoning', '')}",
        ]
        for evidence in ev.get("evidence", []):
            what = evidence.get("quote") or f"{evidence.get('cue')}={evidence.get('value')}"
            lines.append(f"{'':14}- [{evidence.get('kind')}] {what}: {evidence.get('claim')}")
        return "\n".join(lines)
    if kind == "assistant.delta":
        return f"{head}  {ev.get('text', '')!r}"
    if kind == "assistant.text":
        return f"{head}  [{ev.get('policy')}] {ev.get('text')}"
    if kind == "assistant.interrupted":
        return f"{head}  heard: {ev.get('heard_text')!r}"
    if kind in ("error", "warning"):
        return f"{head}  {ev.get('code')}: {ev.get('message')}"
    if kind == "session.started":
        return f"{head}  {ev.get('session_id')} resumed={ev.get('resumed')}"
    if kind == "metrics":
        lat = ev.get("latency_ms", {})
        keys = ("perception", "llm_first_token", "first_audio_byte", "total")
        stages = ", ".join(f"{k} {lat[k]:.0f}" for k in keys if k in lat)
        return f"{head}  {ev.get('outcome')}: {stages} ms"
    return head


def _save_wav(path: Path, pcm: bytes, rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), np.frombuffer(pcm, dtype="<i2"), rate, subtype="PCM_16")


def _refusal_hint(exc: Exception, token: str | None) -> str:
    """What to do about a refused handshake, for the one-line message."""
    status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
    if status == 401:
        wrong = "wrong" if token else "missing"
        return f" (the access token is {wrong}: give it with --token or ${TOKEN_ENV})"
    if status == 403:
        return " (the server does not allow this client's Origin: see EMO_VOICE__ALLOWED_ORIGINS)"
    return ""


def main(argv: list[str] | None = None, default_token: str | None = None) -> int:
    """The command line. ``default_token`` is the token used without ``--token`` (``emo-agent talk``
    passes the ``EMO_VOICE__AUTH_TOKEN`` setting, so the token need not appear in ``ps``)."""
    parser = argparse.ArgumentParser(prog="python -m voice.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help="audio file to send as the user's turn (wav/ogg/flac)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"websocket URL (default {DEFAULT_URL})")
    parser.add_argument("--realtime", action="store_true", help="stream at the speed of speech")
    parser.add_argument("--session", default=None, help="session id to resume")
    parser.add_argument("--text", default=None, help="a typed turn (instead of, or after, the file)")
    parser.add_argument("--out", type=Path, default=None, help="save the reply audio as WAV")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the reply")
    parser.add_argument(
        "--token",
        default=default_token,
        help=f"the server's access token (`emo-agent talk` reads ${TOKEN_ENV} for it, out of `ps`)",
    )
    args = parser.parse_args(argv)
    if args.file is None and args.text is None:
        parser.error("give an audio FILE or --text")

    audio, rate = None, 16_000
    if args.file is not None:
        try:
            audio, rate = load_audio(args.file)
        except Exception as exc:  # missing file, not audio
            print(f"cannot read {args.file}: {exc}", file=sys.stderr)
            return 2

    def show(item: TimedEvent) -> None:
        line = describe(item)
        if line is not None:
            print(line, flush=True)

    try:
        conv = asyncio.run(
            converse(
                args.url,
                audio,
                rate,
                text=args.text,
                session_id=args.session,
                realtime=args.realtime,
                timeout=args.timeout,
                on_event=show,
                token=args.token,
            )
        )
    except (InvalidURI, WebSocketException) as exc:  # not a websocket URL, or no websocket there (404...)
        if isinstance(exc, ConnectionClosed):
            print(f"emo-agent talk: connection to {args.url} lost: {exc}", file=sys.stderr)
            return 1
        print(
            f"emo-agent talk: cannot open {args.url}: {exc}{_refusal_hint(exc, args.token)}", file=sys.stderr
        )
        return 2
    except (OSError, RuntimeError) as exc:
        print(f"emo-agent talk: cannot talk to {args.url}: {exc}", file=sys.stderr)
        return 1
    pcm = conv.reply_pcm
    first_audio = conv.time_of("audio")
    seconds = len(pcm) / 2 / conv.output_sample_rate
    when = f", first at {first_audio:.2f}s" if first_audio is not None else ""
    print(f"session {conv.session_id}: {seconds:.2f}s of reply audio{when}")
    if args.out is not None and pcm:
        _save_wav(args.out, pcm, conv.output_sample_rate)
        print(f"reply audio saved to {args.out}")
    if conv.first("assistant.done") is None:
        if not conv.errors:
            print(f"emo-agent talk: no reply within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 1 if conv.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
