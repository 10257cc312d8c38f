"""A model failing on one turn: perception or TTS raising gives that turn an ``error`` and the session goes
on, the next turn answered as usual."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from dialogue.events import Prosody
from perception.base import SpeakerBaseline
from perception.types import Perception
from tests.voice.test_voice_session import events_of, recv_until, start, text_turn
from tests.voice.voice_fakes import SHORT_REPLY, FakePerceiver, FakeTTS
from voice.protocol import float32_to_pcm16


class PerceiverFailingOnce(FakePerceiver):
    """Raises on its first spoken turn and on the typed turn "break perception"; otherwise a fake."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = 0

    def perceive(
        self, audio: np.ndarray, sample_rate: int = 16_000, baseline: SpeakerBaseline | None = None
    ) -> Perception:
        if not self.failed:
            self.failed += 1
            raise RuntimeError("perception model crashed")
        return super().perceive(audio, sample_rate, baseline)

    def perceive_text(self, text: str, baseline: Any = None) -> Perception:
        if text == "break perception":
            raise RuntimeError("perception model crashed")
        return super().perceive_text(text, baseline)


class TTSFailingOnTurn(FakeTTS):
    """Raises on every sentence while ``broken``; otherwise a fake."""

    broken = False

    def synthesize(self, text: str, prosody: Prosody | None = None) -> Iterator[bytes]:
        if self.broken:
            raise RuntimeError("voice model crashed")
        return super().synthesize(text, prosody)


def answered(seen: list[Any]) -> None:
    """``seen`` ends with a whole, spoken reply and holds no error."""
    assert events_of(seen, "assistant.text")[-1]["text"] == SHORT_REPLY
    assert any(isinstance(frame, bytes) for frame in seen)
    assert not events_of(seen, "error")


async def test_perception_failing_on_a_typed_turn(voice_server: SimpleNamespace) -> None:
    voice_server.services.perceiver = PerceiverFailingOnce()
    async with connect(voice_server.url) as ws:
        await start(ws)
        await ws.send(json.dumps({"type": "input.text", "text": "break perception"}))
        error = await recv_until(ws, "error")
        assert error["code"] == "turn_failed" and "perception model crashed" in error["message"]
        seen = await text_turn(ws, "are you there?")
    assert events_of(seen, "user.perception")[0]["transcript"] == "are you there?"
    answered(seen)


async def send_turn(ws: ClientConnection, pcm: bytes) -> None:
    for i in range(0, len(pcm), 3200):  # 100 ms frames
        await ws.send(pcm[i : i + 3200])
    await ws.send(json.dumps({"type": "input.flush"}))


async def test_perception_failing_on_a_spoken_turn(
    server_factory: Callable[..., Any], speech_clip: np.ndarray
) -> None:
    server = await server_factory(speculative_pause_ms=0)  # one perception per turn
    server.services.perceiver = perceiver = PerceiverFailingOnce()
    pcm = float32_to_pcm16(speech_clip)
    async with connect(server.url) as ws:
        await start(ws)
        await send_turn(ws, pcm)
        failed: list[Any] = []
        error = await recv_until(ws, "error", failed)
        assert error["code"] == "turn_failed" and "perception model crashed" in error["message"]
        assert not events_of(failed, "user.perception")  # the turn never got that far
        await send_turn(ws, pcm)
        seen: list[Any] = []
        await recv_until(ws, "assistant.done", seen)
    assert perceiver.failed == 1 and len(perceiver.durations) == 1
    assert events_of(seen, "user.perception")[0]["transcript"].endswith("seconds of speech")
    answered(seen)


async def test_tts_failing_on_one_turn(voice_server: SimpleNamespace) -> None:
    voice_server.services.tts = tts = TTSFailingOnTurn()
    async with connect(voice_server.url) as ws:
        await start(ws)
        tts.broken = True
        failed: list[Any] = []
        await ws.send(json.dumps({"type": "input.text", "text": "hello"}))
        error = await recv_until(ws, "error", failed)
        assert error["code"] == "turn_failed" and "voice model crashed" in error["message"]
        failed_turn = events_of(failed, "user.perception")[0]["turn_id"]
        assert not any(isinstance(frame, bytes) for frame in failed)
        tts.broken = False
        seen = await text_turn(ws, "and now?")
    # The failed turn ends as interrupted with nothing heard; the next one is answered in full.
    [interrupted] = events_of(seen, "assistant.interrupted")
    assert interrupted == {"type": "assistant.interrupted", "turn_id": failed_turn, "heard_text": ""}
    [perception] = events_of(seen, "user.perception")
    assert perception["turn_id"] != failed_turn
    assert events_of(seen, "assistant.done")[0]["turn_id"] == perception["turn_id"]
    answered(seen)
