"""Sessions and the server over a real websocket, with fake perception, dialogue and TTS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.voice.voice_fakes import LONG_REPLY, SHORT_REPLY, FailingTTS
from voice.client import converse
from voice.protocol import float32_to_pcm16

TIMEOUT = 15


class _AnySession:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_SESSION: Any = _AnySession()


async def recv_until(ws: ClientConnection, kind: str, seen: list[Any] | None = None) -> dict[str, Any]:
    """Receive until a JSON event of ``kind``; everything received is appended to ``seen``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await ws.recv()
            if seen is not None:
                seen.append(frame if isinstance(frame, bytes) else json.loads(frame))
            if isinstance(frame, str):
                event = json.loads(frame)
                if event["type"] == kind:
                    return event


async def start(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "session.start", **fields}))
    return await recv_until(ws, "session.started")


async def text_turn(ws: ClientConnection, text: str = "hello") -> list[Any]:
    seen: list[Any] = []
    await ws.send(json.dumps({"type": "input.text", "text": text}))
    await recv_until(ws, "assistant.done", seen)
    return seen


def events_of(seen: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in seen if isinstance(e, dict) and e["type"] == kind]


# ----------------------------------------------------------------------------------------------- turns


async def test_text_turn_streams_perception_text_and_audio(voice_server: SimpleNamespace) -> None:
    async with connect(voice_server.url) as ws:
        started = await start(ws)
        assert started["resumed"] is False and started["output_sample_rate"] == 16000
        seen = await text_turn(ws, "I missed my bus")
    kinds = [e["type"] if isinstance(e, dict) else "audio" for e in seen]
    assert kinds[0] == "user.perception" and kinds[-1] == "assistant.done"
    perception = seen[0]
    assert perception["transcript"] == "I missed my bus"
    assert {"turn_id", "emotion", "reasoning", "evidence", "model", "timings_ms"} <= set(perception)
    turn_id = perception["turn_id"]
    deltas = events_of(seen, "assistant.delta")
    assert "".join(d["text"] for d in deltas) == SHORT_REPLY
    [text] = events_of(seen, "assistant.text")
    assert text == {"type": "assistant.text", "turn_id": turn_id, "text": SHORT_REPLY, "policy": "empathize"}
    assert all(e["turn_id"] == turn_id for e in seen if isinstance(e, dict))
    audio = [e for e in seen if isinstance(e, bytes)]
    assert audio and all(len(a) <= 3200 and len(a) % 2 == 0 for a in audio)  # ≤ 100 ms at 16 kHz
    assert kinds.index("audio") > kinds.index("user.perception")
    # Two trajectory rows: the user's perception and the assistant's reply with its latencies.
    await asyncio.sleep(0.05)
    user, assistant = voice_server.services.trajectory.records
    assert (user.speaker, user.transcript, user.label) == ("user", "I missed my bus", "neutral")
    assert (assistant.speaker, assistant.transcript, assistant.policy) == (
        "assistant",
        SHORT_REPLY,
        "empathize",
    )
    assert not assistant.interrupted
    assert {"perception", "llm_first_token", "first_audio_byte", "total"} <= set(assistant.latency_ms)


async def test_audio_turn_ended_by_vad(voice_server: SimpleNamespace, speech_clip: np.ndarray) -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), speech_clip, np.zeros(16000, np.float32)])
    conv = await converse(voice_server.url, audio, 16000, timeout=TIMEOUT)
    kinds = [e.type for e in conv.events]
    assert kinds.index("speech.started") < kinds.index("speech.stopped") < kinds.index("user.perception")
    perception = conv.first("user.perception")
    assert perception["transcript"].endswith("seconds of speech")
    assert perception["emotion"]["label"] == "angry"
    assert conv.first("assistant.done") and conv.reply_pcm and not conv.errors
    assert conv.time_of("audio") < conv.time_of("assistant.done")


async def test_audio_turn_at_another_rate_ended_by_flush(
    voice_server: SimpleNamespace, speech_clip: np.ndarray
) -> None:
    from scipy.signal import resample_poly

    audio = resample_poly(speech_clip[: int(1.6 * 16000)], 441, 160).astype(np.float32)  # 44.1 kHz
    conv = await converse(voice_server.url, audio, 44100, timeout=TIMEOUT)
    assert not conv.errors
    assert conv.first("assistant.done") is not None
    assert voice_server.services.perceiver.durations[-1] == pytest.approx(1.6, abs=0.35)


async def test_resumed_session(voice_server: SimpleNamespace) -> None:
    async with connect(voice_server.url) as ws:
        first = await start(ws, session_id="resume-me")
        await ws.send(json.dumps({"type": "session.end"}))
        await ws.wait_closed()
    async with connect(voice_server.url) as ws:
        second = await start(ws, session_id="resume-me")
    assert (first["resumed"], second["resumed"]) == (False, True)
    assert second["session_id"] == "resume-me"


# ----------------------------------------------------------------------------------------------- errors


async def expect_error(ws: ClientConnection, frame: str | bytes, code: str) -> None:
    await ws.send(frame)
    event = await recv_until(ws, "error")
    assert event["code"] == code, event
    assert event["message"]


async def test_bad_input_before_start(voice_server: SimpleNamespace) -> None:
    async with connect(voice_server.url) as ws:
        await expect_error(ws, b"\x00\x00" * 160, "not_started")
        await expect_error(ws, json.dumps({"type": "input.text", "text": "hi"}), "not_started")
        await expect_error(ws, json.dumps({"type": "input.flush"}), "not_started")
        await expect_error(ws, json.dumps({"type": "session.start", "sample_rate": 1000}), "bad_sample_rate")
        await start(ws)  # the connection is still usable
        assert events_of(await text_turn(ws), "assistant.done")


async def test_every_bad_input_gets_an_error_and_the_session_survives(
    voice_server: SimpleNamespace, speech_clip: np.ndarray
) -> None:
    other_done = asyncio.Event()

    async def other_session() -> None:
        async with connect(voice_server.url) as ws:
            await start(ws)
            for _ in range(3):
                seen = await text_turn(ws)
                assert not events_of(seen, "error")
        other_done.set()

    other = asyncio.create_task(other_session())
    async with connect(voice_server.url) as ws:
        await start(ws)
        await expect_error(ws, "{definitely not json", "bad_json")
        await expect_error(ws, json.dumps({"type": "dance"}), "unknown_type")
        await expect_error(ws, json.dumps({"type": "input.text"}), "bad_field")
        await expect_error(ws, json.dumps({"type": "session.start"}), "already_started")
        await expect_error(ws, b"\x01\x02\x03", "odd_bytes")
        await expect_error(ws, json.dumps({"type": "input.text", "text": "x" * 201}), "text_too_long")
        await expect_error(ws, b"\x00" * (64 * 1024 + 2), "message_too_large")
        await expect_error(ws, json.dumps({"type": "input.text", "text": "y" * 70000}), "message_too_large")
        await expect_error(ws, json.dumps({"type": "input.flush"}), "no_speech")
        # A 0.2 s flush is speech too short to perceive: the turn fails, the session does not.
        await ws.send(float32_to_pcm16(speech_clip[16000 : 16000 + 3200]))
        await expect_error(ws, json.dumps({"type": "input.flush"}), "audio_error")
        await expect_error(ws, json.dumps({"type": "input.text", "text": "explode"}), "turn_failed")
        seen = await text_turn(ws, "still there?")
        assert events_of(seen, "assistant.text")[0]["text"] == SHORT_REPLY
    await asyncio.wait_for(other, TIMEOUT)
    assert other_done.is_set()


# --------------------------------------------------------------------------------------------- barge-in


async def wait_for_audio(ws: ClientConnection, seen: list[Any]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await ws.recv()
            seen.append(frame if isinstance(frame, bytes) else json.loads(frame))
            if isinstance(frame, bytes):
                return


async def test_new_turn_interrupts_the_reply(voice_server: SimpleNamespace) -> None:
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen: list[Any] = []
        await ws.send(json.dumps({"type": "input.text", "text": "tell me something long"}))
        await wait_for_audio(ws, seen)
        first_turn = events_of(seen, "user.perception")[0]["turn_id"]
        await asyncio.sleep(0.6)
        await ws.send(json.dumps({"type": "input.text", "text": "stop"}))
        interrupted = await recv_until(ws, "assistant.interrupted", seen)
        assert interrupted["turn_id"] == first_turn
        heard = interrupted["heard_text"]
        assert heard and LONG_REPLY.startswith(heard) and len(heard) < len(LONG_REPLY) / 2
        after: list[Any] = []
        await recv_until(ws, "assistant.done", after)
    # Of the interrupted turn only its metrics report follows; nothing that would be played or shown.
    late = [e for e in after if isinstance(e, dict) and e.get("turn_id") == first_turn]
    assert [(e["type"], e["outcome"]) for e in late] == [("metrics", "interrupted")]
    assert events_of(after, "assistant.text")[0]["text"] == SHORT_REPLY
    dialogue = voice_server.services.dialogue
    assert dialogue.interrupted[0][1:] == (first_turn, heard)
    await asyncio.sleep(0.05)
    records = [r for r in voice_server.services.trajectory.records if r.turn_id == first_turn]
    assert [r.speaker for r in records] == ["user", "assistant"]
    assert records[1].interrupted and records[1].transcript == heard


async def test_speech_barges_in(voice_server: SimpleNamespace, speech_clip: np.ndarray) -> None:
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen: list[Any] = []
        await ws.send(json.dumps({"type": "input.text", "text": "a long story please"}))
        await wait_for_audio(ws, seen)
        first_turn = events_of(seen, "user.perception")[0]["turn_id"]
        step = 320  # 20 ms, paced like a microphone

        async def talk() -> None:
            for offset in range(0, len(speech_clip), step):
                await ws.send(float32_to_pcm16(speech_clip[offset : offset + step]))
                await asyncio.sleep(0.02)
            await ws.send(json.dumps({"type": "input.flush"}))

        talker = asyncio.create_task(talk())
        interrupted = await recv_until(ws, "assistant.interrupted", seen)
        assert interrupted["turn_id"] == first_turn
        kinds = [e["type"] for e in seen if isinstance(e, dict)]
        assert "speech.started" in kinds
        after: list[Any] = []
        await recv_until(ws, "assistant.done", after)  # the user's spoken turn gets its own reply
        await talker
    perceptions = events_of(after, "user.perception")
    assert perceptions and perceptions[0]["transcript"].endswith("seconds of speech")
    assert voice_server.services.dialogue.interrupted[0][1] == first_turn


async def wait_for_close(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def wait_for_records(trajectory: Any, turn_id: str, n: int = 2) -> list[Any]:
    async with asyncio.timeout(TIMEOUT):
        while len(records := [r for r in trajectory.records if r.turn_id == turn_id]) < n:
            await asyncio.sleep(0.02)
    return records


async def test_client_leaving_mid_reply_still_logs_the_interrupted_turn(
    voice_server: SimpleNamespace,
) -> None:
    dialogue = voice_server.services.dialogue

    async def slow_mark_interrupted(session_id: str, turn_id: str, heard_text: str) -> None:
        await asyncio.sleep(0.3)  # like a Redis round trip: the socket is long gone by now
        dialogue.interrupted.append((session_id, turn_id, heard_text))

    dialogue.mark_interrupted = slow_mark_interrupted
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen: list[Any] = []
        await ws.send(json.dumps({"type": "input.text", "text": "tell me something long"}))
        await wait_for_audio(ws, seen)
        turn_id = events_of(seen, "user.perception")[0]["turn_id"]
        await asyncio.sleep(0.3)
        # Leave mid-reply, reading on until the close handshake completes (a real client's socket does).
        drain = asyncio.create_task(wait_for_close(ws))
        await ws.close()
        await asyncio.wait_for(drain, TIMEOUT)
    # The client left while the reply was playing: the turn is still logged, as interrupted.
    user, assistant = await wait_for_records(voice_server.services.trajectory, turn_id)
    assert (user.speaker, user.transcript) == ("user", "tell me something long")
    assert assistant.speaker == "assistant" and assistant.interrupted
    assert LONG_REPLY.startswith(assistant.transcript) and assistant.transcript != LONG_REPLY
    assert [t for _, t, _ in dialogue.interrupted] == [turn_id]


async def test_tts_failing_mid_reply_ends_the_turn_as_interrupted(voice_server: SimpleNamespace) -> None:
    voice_server.services.tts = FailingTTS(fail_on=2)
    first_sentence = LONG_REPLY.split(". ")[0] + "."
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen: list[Any] = []
        await ws.send(json.dumps({"type": "input.text", "text": "tell me something long"}))
        interrupted = await recv_until(ws, "assistant.interrupted", seen)
        turn_id = events_of(seen, "user.perception")[0]["turn_id"]
        [error] = events_of(seen, "error")
        assert error["code"] == "turn_failed" and "voice model crashed" in error["message"]
        assert seen.index(error) < seen.index(interrupted)
        assert interrupted == {
            "type": "assistant.interrupted",
            "turn_id": turn_id,
            "heard_text": first_sentence,
        }
        assert not events_of(seen, "assistant.done")
        after = await text_turn(ws, "are you there?")  # the next turn is unaffected
        assert events_of(after, "assistant.text")[0]["text"] == SHORT_REPLY
    assert voice_server.services.dialogue.interrupted == [(ANY_SESSION, turn_id, first_sentence)]
    user, assistant = await wait_for_records(voice_server.services.trajectory, turn_id)
    assert user.speaker == "user" and assistant.interrupted and assistant.transcript == first_sentence


async def test_a_dropped_turn_leaves_the_speaker_baseline_alone(
    voice_server: SimpleNamespace, speech_clip: np.ndarray
) -> None:
    perceiver = voice_server.services.perceiver
    perceiver.delay_s = 0.5
    pcm = float32_to_pcm16(speech_clip[: int(1.6 * 16000)])  # cut mid-speech: only the flush ends it
    async with connect(voice_server.url) as ws:
        await start(ws)
        await ws.send(pcm)
        await ws.send(json.dumps({"type": "input.flush"}))
        await asyncio.sleep(0.1)  # the spoken turn is being perceived ...
        seen = await text_turn(ws, "never mind")  # ... when a typed turn replaces it
        assert len(events_of(seen, "user.perception")) == 1
        await asyncio.sleep(0.6)  # the dropped turn's perception has finished by now
        await ws.send(pcm)
        await ws.send(json.dumps({"type": "input.flush"}))
        await recv_until(ws, "assistant.done")
    # Both spoken turns were perceived, but the dropped one was not folded into the baseline.
    assert perceiver.baseline_turns_seen == [0, 0]


# ------------------------------------------------------------------------------------------------- HTTP


def http_get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


async def test_http_routes(voice_server: SimpleNamespace) -> None:
    status, ctype, body = await asyncio.to_thread(http_get, voice_server.http + "/")
    assert status == 200 and ctype.startswith("text/html") and "<html" in body.lower()
    status, _, body = await asyncio.to_thread(http_get, voice_server.http + "/health")
    assert (status, body) == (200, "ok")
    status, ctype, _ = await asyncio.to_thread(http_get, voice_server.http + "/pcm-worklet.js")
    assert status == 200 and ctype.startswith("text/javascript")
    for path in ("/nope", "/../voice_server.py", "/%2e%2e/session.py", "/app.js%00", "/%00"):
        status, _, _ = await asyncio.to_thread(http_get, voice_server.http + path)
        assert status == 404, path


def test_static_file_refuses_nul_bytes() -> None:
    from voice.server import static_file

    assert static_file("/app.js") is not None
    assert static_file("/app.js%00") is None
    assert static_file("/%00/x") is None
