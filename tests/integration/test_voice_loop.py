"""The whole loop on real parts: a real server process, real Redis, real models, a real CREMA-D clip.

Streams speech over the websocket and checks every contract event, what Redis holds afterwards, session
resume, and that bad input gets ``error`` events while this and other sessions keep working.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf
from websockets.asyncio.client import connect

from agent.trajectory import TrajectoryLog
from perception.evaluation import word_error_rate
from perception.types import LABELS, Perception

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIP = "audio/1001_IEO_ANG_HI.ogg"  # "It's eleven o'clock", angry, high intensity
TURN_TIMEOUT_S = 180


def pcm16(path: Path, silence_s: float = 0.0) -> bytes:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    audio = np.concatenate([np.zeros(4000, np.float32), audio, np.zeros(int(silence_s * rate), np.float32)])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def send_audio(ws, pcm: bytes, chunk_bytes: int = 640 * 5) -> None:
    for i in range(0, len(pcm), chunk_bytes):
        await ws.send(pcm[i : i + chunk_bytes])
        await asyncio.sleep(0)  # faster than real time; VAD timing is measured in samples


async def collect_turn(ws) -> tuple[list[dict], int]:
    """Events until ``assistant.done``; returns (json events, bytes of reply audio)."""
    events: list[dict] = []
    audio_bytes = 0
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout=max(1.0, deadline - time.monotonic()))
        if isinstance(msg, bytes):
            audio_bytes += len(msg)
            continue
        event = json.loads(msg)
        events.append(event)
        if event["type"] == "error":
            raise AssertionError(f"unexpected error event: {event}")
        if event["type"] == "assistant.done":
            return events, audio_bytes


async def start(ws, session_id: str | None = None, rate: int = 16000) -> dict:
    msg: dict = {"type": "session.start", "sample_rate": rate}
    if session_id:
        msg["session_id"] = session_id
    await ws.send(json.dumps(msg))
    started = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert started["type"] == "session.started", started
    return started


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


@pytest.fixture
def clip(crema_dir: Path) -> Path:
    return crema_dir / CLIP


async def test_spoken_turn_end_to_end(server, clip: Path, redis_url: str) -> None:
    async with connect(server.ws_url, max_size=None) as ws:
        started = await start(ws)
        session_id = started["session_id"]
        assert started["resumed"] is False
        assert started["output_sample_rate"] > 0

        # Turn 1: VAD ends the turn (speech followed by silence, no flush).
        await send_audio(ws, pcm16(clip, silence_s=1.5))
        events, audio_bytes = await collect_turn(ws)
        kinds = types(events)
        assert kinds.index("speech.started") < kinds.index("speech.stopped") < kinds.index("user.perception")
        assert kinds.index("user.perception") < kinds.index("assistant.text") < kinds.index("assistant.done")

        perception_event = events[kinds.index("user.perception")]
        turn_id = perception_event["turn_id"]
        perception = Perception.model_validate(
            {k: v for k, v in perception_event.items() if k not in ("type", "turn_id")}
        )
        # the clip says "It's eleven o'clock."; a margin, not one tiny-ASR word (WER 0.22 on 360 clips)
        heard = perception.transcript
        assert word_error_rate(["It's eleven o'clock."], [heard]) <= 0.5, heard
        assert set(perception.emotion.scores) == set(LABELS)
        assert abs(sum(perception.emotion.scores.values()) - 1) < 1e-3
        assert perception.reasoning and perception.evidence
        for ev in perception.evidence:  # every citation is checkable
            if ev.kind == "lexical":
                assert ev.quote and ev.quote.lower() in perception.transcript.lower()

        text_event = events[kinds.index("assistant.text")]
        assert text_event["turn_id"] == turn_id
        assert text_event["text"].strip()
        assert text_event["policy"]
        deltas = [e["text"] for e in events if e["type"] == "assistant.delta"]
        if deltas:
            assert "".join(deltas).strip() == text_event["text"].strip()
        assert audio_bytes > 0 and audio_bytes % 2 == 0
        # At least ~0.3 s of reply speech at the declared rate.
        assert audio_bytes / 2 / started["output_sample_rate"] > 0.3
        assert events[-1] == {"type": "assistant.done", "turn_id": turn_id}

        # Turn 2: push-to-talk, ended by input.flush.
        await send_audio(ws, pcm16(clip))
        await ws.send(json.dumps({"type": "input.flush"}))
        events2, _ = await collect_turn(ws)
        assert "user.perception" in types(events2)
        await ws.send(json.dumps({"type": "session.end"}))

    # Redis holds both turns of both speakers, in order, with the perception fields.
    client = aioredis.Redis.from_url(redis_url)
    try:
        records = await TrajectoryLog(client).read(session_id)
    finally:
        await client.aclose()
    assert [r.speaker for r in records] == ["user", "assistant", "user", "assistant"]
    user, assistant = records[0], records[1]
    assert user.turn_id == turn_id and assistant.turn_id == turn_id
    assert user.label == perception.emotion.label
    assert user.transcript == perception.transcript
    assert user.evidence and user.reasoning
    assert assistant.transcript == text_event["text"]
    assert assistant.policy == text_event["policy"]
    # Each reply starts after its user turn; turns follow each other. (Audio is streamed faster than real
    # time here, so a user turn's speech times, derived from its samples, may predate the previous reply.)
    assert records[0].t_start <= records[0].t_end <= records[1].t_start <= records[1].t_end
    assert records[0].t_start < records[2].t_start and records[2].t_end <= records[3].t_start

    # Resume: the same session id continues the stored history.
    async with connect(server.ws_url, max_size=None) as ws:
        resumed = await start(ws, session_id)
        assert resumed["session_id"] == session_id and resumed["resumed"] is True
        await ws.send(json.dumps({"type": "input.text", "text": "Thanks, that helps a lot."}))
        events3, _ = await collect_turn(ws)
        assert "assistant.text" in types(events3)


async def next_json(ws, timeout: float = 30) -> dict:
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(msg, str):
            return json.loads(msg)


async def test_bad_input_gets_errors_and_sessions_survive(server) -> None:
    async with (
        connect(server.ws_url, max_size=None) as bystander,
        connect(server.ws_url, max_size=None) as ws,
    ):
        await start(bystander)
        # Audio before session.start
        await ws.send(b"\x00\x00" * 160)
        err = await next_json(ws)
        assert err["type"] == "error" and err["code"]
        await start(ws)
        bad_inputs = [
            "{not json",
            json.dumps({"type": "no.such.type"}),
            json.dumps({"type": "input.text", "text": "x" * 100_000}),
            json.dumps(["not", "an", "object"]),
        ]
        for raw in bad_inputs:
            await ws.send(raw)
            err = await next_json(ws)
            assert err["type"] == "error", (raw[:40], err)
            assert err["code"] and err["message"]
        await ws.send(b"\x01\x02\x03")  # odd number of bytes: not 16-bit PCM
        err = await next_json(ws)
        assert err["type"] == "error"

        # A bad sample rate on a fresh connection
        async with connect(server.ws_url) as other:
            await other.send(json.dumps({"type": "session.start", "sample_rate": 123}))
            err = await next_json(other)
            assert err["type"] == "error" and "rate" in err["message"].lower()

        # The abused session still works, and so does the bystander.
        for conn in (ws, bystander):
            await conn.send(json.dumps({"type": "input.text", "text": "I am feeling a bit better today."}))
            events, _ = await collect_turn(conn)
            assert "assistant.text" in types(events)
