"""The turn pipeline (voice.pipeline) with fake services and an in-memory outlet: no socket, no VAD."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from tests.voice.voice_fakes import (
    LONG_REPLY,
    SHORT_REPLY,
    FailingTTS,
    FakeDialogue,
    FakePerceiver,
    FakeTrajectory,
    FakeTTS,
)
from voice.pipeline import Turn, TurnPipeline
from voice.records import TurnRecorder
from voice.tts import TTS


class Outlet:
    def __init__(self) -> None:
        self.items: list[Any] = []  # event dicts and (turn_id, pcm) pairs, in order
        self.dropped: set[str] = set()

    def send(self, event: dict[str, Any]) -> None:
        self.items.append(event)

    def send_audio(self, pcm: bytes, turn_id: str) -> None:
        self.items.append((turn_id, pcm))

    def drop_audio(self, turn_id: str) -> None:
        self.dropped.add(turn_id)

    def types(self) -> list[str]:
        return [i["type"] if isinstance(i, dict) else "audio" for i in self.items]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [i for i in self.items if isinstance(i, dict) and i["type"] == kind]

    def audio_bytes(self) -> int:
        return sum(len(i[1]) for i in self.items if isinstance(i, tuple))


class Rig:
    def __init__(self, tts: TTS | None, *, consent: bool = True, lead_s: float = 0.5) -> None:
        self.outlet = Outlet()
        self.dialogue = FakeDialogue(delay_s=0.001)
        self.trajectory = FakeTrajectory()
        self.speaking: list[bool] = []
        self.tts = tts
        self.pipeline = TurnPipeline(
            "s1",
            perceiver=FakePerceiver(),
            dialogue=self.dialogue,
            tts=tts,
            baseline=None,
            recorder=TurnRecorder(self.trajectory),
            consent=consent,
            outlet=self.outlet,
            on_speaking=lambda _turn, on: self.speaking.append(on),
            first_clause_chars=0,
            playback_lead_s=lead_s,
            logger=logging.getLogger("test"),
        )


async def test_a_turn_streams_perception_deltas_audio_text_then_done_and_is_recorded() -> None:
    tts = FakeTTS(seconds_per_word=0.02)
    rig = Rig(tts)
    turn = Turn.typed("hello")
    await rig.pipeline.run(turn)
    types = rig.outlet.types()
    assert types[0] == "user.perception" and types[-2:] == ["assistant.done", "metrics"]
    assert types.index("assistant.text") < types.index("assistant.done")
    assert "".join(e["text"] for e in rig.outlet.events("assistant.delta")) == SHORT_REPLY
    assert all(i["turn_id"] == turn.turn_id for i in rig.outlet.items if isinstance(i, dict))
    assert tts.spoken == ["I hear you.", "Tell me more."]
    assert rig.outlet.audio_bytes() == sum(int(len(s.split()) * 0.02 * 16_000) * 2 for s in tts.spoken)
    frames = [pcm for _tid, pcm in (i for i in rig.outlet.items if isinstance(i, tuple))]
    assert max(len(f) for f in frames) <= 16_000 // 10 * 2  # at most 100 ms each
    assert rig.speaking[0] is True and rig.speaking[-1] is False
    user, reply = rig.trajectory.records
    assert (user.speaker, user.transcript) == ("user", "hello")
    assert (reply.speaker, reply.transcript, reply.interrupted, reply.policy) == (
        "assistant",
        SHORT_REPLY,
        False,
        "empathize",
    )
    stages = {"perception", "llm_first_token", "first_sentence", "first_audio_byte", "reply_text", "total"}
    assert stages <= set(reply.latency_ms) and reply.latency_ms["dialogue_llm"] == 3.0
    assert reply.t_start <= reply.t_end and reply.model == "fake-llm@1"


async def test_done_waits_until_the_audio_sent_has_played() -> None:
    rig = Rig(FakeTTS(seconds_per_word=0.1), lead_s=10.0)  # everything is sent at once
    began = time.monotonic()
    await rig.pipeline.run(Turn.typed("hello"))
    assert time.monotonic() - began >= 0.6 - 0.05  # six words of 0.1 s


async def test_an_interrupted_turn_reports_and_records_what_was_heard() -> None:
    rig = Rig(FakeTTS(seconds_per_word=0.12))
    turn = Turn.typed("a long story")
    task = asyncio.create_task(rig.pipeline.run(turn))
    async with asyncio.timeout(10):
        while turn.reply is None or turn.reply.playback.position(time.monotonic()) < 1.5:
            await asyncio.sleep(0.02)
    now = time.monotonic()
    turn.cancelled = True
    task.cancel()
    await asyncio.wait([task])
    await rig.pipeline.interrupted(turn, now, notify=True)

    (event,) = rig.outlet.events("assistant.interrupted")
    heard = event["heard_text"]
    assert heard == turn.reply.heard_text(now, speaking=True)
    assert len(heard.split()) >= 1.5 / 0.12 - 2 and LONG_REPLY.startswith(heard)
    assert heard != LONG_REPLY.strip() and not rig.outlet.events("assistant.done")
    assert rig.dialogue.interrupted == [("s1", turn.turn_id, heard)]
    user, reply = rig.trajectory.records
    assert (reply.transcript, reply.interrupted) == (heard, True)


async def test_interrupting_before_the_reply_sends_and_records_nothing() -> None:
    rig = Rig(FakeTTS())
    turn = Turn.typed("hello")
    await rig.pipeline.interrupted(turn, time.monotonic(), notify=True)
    assert rig.outlet.items == [] and rig.trajectory.records == [] and rig.dialogue.interrupted == []


async def test_a_reply_failing_after_it_began_ends_like_an_interruption() -> None:
    rig = Rig(FailingTTS(fail_on=2))
    turn = Turn.typed("hello")
    await rig.pipeline.run(turn)
    types = rig.outlet.types()
    assert "assistant.done" not in types
    assert types.index("error") < types.index("assistant.interrupted")
    assert rig.outlet.events("error")[0]["code"] == "turn_failed"
    heard = rig.outlet.events("assistant.interrupted")[0]["heard_text"]
    assert heard == "I hear you."  # the first sentence was sent and has played
    assert turn.turn_id in rig.outlet.dropped and turn.finished
    assert rig.dialogue.interrupted == [("s1", turn.turn_id, heard)]
    assert rig.trajectory.records[1].interrupted is True


async def test_without_tts_the_streamed_text_counts_as_heard() -> None:
    rig = Rig(None)
    turn = Turn.typed("hello")
    await rig.pipeline.run(turn)
    assert rig.outlet.audio_bytes() == 0 and rig.outlet.types()[-2:] == ["assistant.done", "metrics"]
    assert rig.trajectory.records[1].transcript == SHORT_REPLY
    assert turn.reply is not None and turn.reply.heard_text(time.monotonic(), speaking=False) == SHORT_REPLY


async def test_without_consent_nothing_is_recorded() -> None:
    rig = Rig(FakeTTS(seconds_per_word=0.01), consent=False)
    await rig.pipeline.run(Turn.typed("hello"))
    assert rig.outlet.types()[-2:] == ["assistant.done", "metrics"] and rig.trajectory.records == []


async def test_unusable_audio_is_an_audio_error_without_a_reply() -> None:
    rig = Rig(FakeTTS())
    turn = Turn.spoken(np.zeros(800, dtype=np.float32), 1.0, 1.05)  # 50 ms: the fake perceiver refuses it
    await rig.pipeline.run(turn)
    assert rig.outlet.types() == ["error"] and rig.outlet.items[0]["code"] == "audio_error"
    assert turn.reply is None and rig.trajectory.records == []
