"""Privacy of the voice server: session ids nobody can guess, no words of the conversation in the logs at
the default level, and a session without consent leaves nothing in the trajectory log, Redis up or down."""

from __future__ import annotations

import asyncio
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
from websockets.asyncio.client import connect

from tests.voice.test_voice_session import events_of, recv_until, start, text_turn, wait_for_audio
from tests.voice.voice_fakes import LONG_REPLY, SHORT_REPLY
from voice.client import stream_pcm

SECRET = "my neighbour Walter took the blue bicycle"


async def test_server_made_session_ids_are_random_128_bit_hex(voice_server: SimpleNamespace) -> None:
    ids = []
    for _ in range(20):
        async with connect(voice_server.url) as ws:
            ids.append((await start(ws))["session_id"])
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert all(i[12] == "4" for i in ids)  # uuid4: 122 random bits from the OS's generator


async def test_no_words_of_a_conversation_reach_the_log_at_info(
    voice_server: SimpleNamespace, speech_clip: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen = await text_turn(ws, SECRET)
        assert events_of(seen, "user.perception")[0]["transcript"] == SECRET  # the words were there
        await stream_pcm(ws, speech_clip, 16_000)
        await ws.send('{"type": "input.flush"}')
        await recv_until(ws, "assistant.done")
        await ws.send('{"type": "input.text", "text": "what now?"}')  # a too-long input is refused ...
        await ws.send('{"type": "input.text", "text": "' + "secret " * 40 + '"}')
        await recv_until(ws, "error")
    assert caplog.records, "the server logged nothing: the check below would prove nothing"
    logged = caplog.text
    assert SECRET not in logged and "Walter" not in logged
    assert "seconds of speech" not in logged  # the fake perceiver's transcript of the audio turn
    assert SHORT_REPLY not in logged and "I hear you" not in logged
    assert "secret secret" not in logged  # ... and its text is not quoted in the log


async def test_an_interrupted_reply_is_not_quoted_in_the_log_at_info(
    voice_server: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen: list = []
        await ws.send('{"type": "input.text", "text": "tell me something long"}')
        await wait_for_audio(ws, seen)
        await asyncio.sleep(0.6)  # about five words of the first sentence played
        await ws.send('{"type": "input.text", "text": "stop"}')
        interrupted = await recv_until(ws, "assistant.interrupted")
    first_words = " ".join(LONG_REPLY.split()[:3])
    assert interrupted["heard_text"].startswith(first_words)  # something was heard, so could be logged
    assert "interrupted" in caplog.text  # the interruption itself is logged ...
    assert first_words not in caplog.text  # ... without what the user heard of the reply
