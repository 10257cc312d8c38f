"""The research trajectory log behind a real websocket session: consent, retention, record fields and the
``/sessions/{id}/trajectory`` endpoint. Perception, dialogue and TTS are the light in-test services; the
:class:`~agent.trajectory.TrajectoryLog` is the real one on a real Redis (``EMO_REDIS_URL``, else db 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf
from websockets.asyncio.client import connect

from agent.trajectory import AUDIO_KEY_PREFIX, SCHEMA_VERSION, TrajectoryLog, audio_key, stream_key
from tests.voice.test_voice_session import http_get, recv_until, start, text_turn
from tests.voice.voice_fakes import free_port, make_services, skip_or_fail
from voice import protocol as proto
from voice.client import converse
from voice.server import serve
from voice.vad import SileroVAD

pytestmark = pytest.mark.integration

TTL_S = 600


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(os.environ.get("EMO_REDIS_URL", "redis://127.0.0.1:6379/15"))
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        skip_or_fail(f"no Redis at the test URL: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def logged_server(redis_client: aioredis.Redis, silero: SileroVAD) -> AsyncIterator[SimpleNamespace]:
    """The real server over the in-test models, logging to a real :class:`TrajectoryLog`."""
    services = make_services()
    services.trajectory = TrajectoryLog(
        redis_client, ttl_s=TTL_S, consent_default=True, keep_audio=True, dialogue_model="fake-llm@1"
    )
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(services, "127.0.0.1", port, ready=ready, vad=silero, playback_lead_s=0.2, handle_signals=False)
    )
    await asyncio.wait_for(ready.wait(), 10)
    prefix = f"test-traj-{uuid.uuid4().hex[:8]}"
    yield SimpleNamespace(
        url=f"ws://127.0.0.1:{port}/ws",
        http=f"http://127.0.0.1:{port}",
        log=services.trajectory,
        prefix=prefix,
    )
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for pattern in (stream_key(prefix) + "*", f"{AUDIO_KEY_PREFIX}{prefix}*"):
        async for key in redis_client.scan_iter(match=pattern):
            await redis_client.delete(key)


async def session_with_turns(url: str, session_id: str, consent: bool | None, audio: np.ndarray) -> dict:
    """One connection: a typed turn, then a spoken one; returns the ``session.started`` event."""
    fields = {"session_id": session_id} if consent is None else {"session_id": session_id, "consent": consent}
    async with connect(url) as ws:
        started = await start(ws, **fields)
        await text_turn(ws, "I lost my keys again")
        pcm = proto.float32_to_pcm16(audio)
        for offset in range(0, len(pcm), 6400):  # 200 ms frames, under the test limit on frame size
            await ws.send(pcm[offset : offset + 6400])
        await ws.send(json.dumps({"type": "input.flush"}))
        await recv_until(ws, "assistant.done")
        await ws.send(json.dumps({"type": "session.end"}))
        await ws.wait_closed()
    return started


def test_session_start_parses_consent() -> None:
    assert proto.parse_text_frame('{"type": "session.start"}').consent is None
    assert proto.parse_text_frame('{"type": "session.start", "consent": false}').consent is False
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_text_frame('{"type": "session.start", "consent": "yes"}')
    assert info.value.code == proto.ErrorCode.BAD_FIELD


async def test_consent_off_logs_nothing(
    logged_server: SimpleNamespace, redis_client: aioredis.Redis, speech_clip: np.ndarray
) -> None:
    off, on = f"{logged_server.prefix}-off", f"{logged_server.prefix}-on"
    started_off = await session_with_turns(logged_server.url, off, False, speech_clip)
    started_on = await session_with_turns(logged_server.url, on, True, speech_clip)
    assert (started_off["consent"], started_on["consent"]) == (False, True)
    await asyncio.sleep(0.1)
    # The same conversation with consent is logged (so the check below can fail) ...
    assert [r.speaker for r in await logged_server.log.read(on)] == ["user", "assistant"] * 2
    # ... and without consent nothing at all reaches Redis: no stream, no audio.
    assert not await redis_client.exists(stream_key(off))
    assert [k async for k in redis_client.scan_iter(match=f"{AUDIO_KEY_PREFIX}{off}*")] == []
    status, _, body = await asyncio.to_thread(http_get, f"{logged_server.http}/sessions/{off}/trajectory")
    assert status == 404 and json.loads(body)["session_id"] == off


async def test_default_consent_is_echoed(logged_server: SimpleNamespace) -> None:
    async with connect(logged_server.url) as ws:
        started = await start(ws, session_id=f"{logged_server.prefix}-default")
    assert started["consent"] is True  # the log's consent_default


async def test_records_ttl_audio_and_endpoint(
    logged_server: SimpleNamespace, redis_client: aioredis.Redis, speech_clip: np.ndarray
) -> None:
    session_id = f"{logged_server.prefix}-on"
    audio = np.concatenate([np.zeros(8000, np.float32), speech_clip, np.zeros(16000, np.float32)])
    conv = await converse(logged_server.url, audio, 16000, session_id=session_id, timeout=15)
    assert conv.first("assistant.done") and not conv.errors
    await asyncio.sleep(0.1)
    records = await logged_server.log.read(session_id)
    # Exactly one user and one assistant record, even though the client left right after assistant.done.
    user, assistant = records
    assert (user.speaker, assistant.speaker) == ("user", "assistant")
    assert user.schema_version == SCHEMA_VERSION and user.model == "fake@1" and user.label == "angry"
    assert assistant.model == "fake-llm@1" and assistant.policy == "empathize" and not assistant.interrupted
    # The user's window is the speech (as long as the turn's audio); the assistant's the playback after it.
    assert user.t_end - user.t_start == pytest.approx(float(user.transcript.split()[0]), abs=0.05)
    assert user.t_end <= assistant.t_start <= assistant.t_end
    assert assistant.t_end - assistant.t_start >= 0.1  # FakeTTS audio of the short reply
    assert {"perception", "first_audio_byte", "total"} <= set(assistant.latency_ms)
    assert any(k.startswith("perception_") for k in user.latency_ms)
    # Retention: the stream and the kept audio expire after the configured TTL.
    assert 0 < await redis_client.ttl(stream_key(session_id)) <= TTL_S
    assert user.audio_ref == audio_key(session_id, user.turn_id)
    assert 0 < await redis_client.ttl(user.audio_ref) <= TTL_S
    wav, rate = sf.read(io.BytesIO(await logged_server.log.read_audio(user.audio_ref)))
    assert rate == 16000 and len(wav) / rate == pytest.approx(float(user.transcript.split()[0]), abs=0.01)
    # The JSON endpoint returns the same rows.
    status, ctype, body = await asyncio.to_thread(
        http_get, f"{logged_server.http}/sessions/{session_id}/trajectory"
    )
    assert status == 200 and ctype == "application/json"
    payload = json.loads(body)
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["turns"] == [r.row() for r in records]
    status, _, _ = await asyncio.to_thread(http_get, f"{logged_server.http}/sessions/bad%20id/trajectory")
    assert status == 404
