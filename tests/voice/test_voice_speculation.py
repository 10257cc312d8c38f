"""Speculative turns: begun at a pause, held until the end of the turn confirms them, dropped unheard when
the user goes on speaking. First the pipeline on its own, then over a real websocket with the real VAD."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
from websockets.asyncio.client import connect

from tests.voice.test_voice_pipeline import Rig
from tests.voice.test_voice_session import TIMEOUT, events_of, recv_until, start
from tests.voice.voice_fakes import FakeBaseline, FakeTTS
from voice.client import converse
from voice.pipeline import Turn
from voice.protocol import float32_to_pcm16


def spoken(seconds: float = 1.0) -> Turn:
    return Turn.speculative(np.full(int(16_000 * seconds), 0.1, np.float32), 1.0, 1.0 + seconds)


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------- the pipeline


async def test_a_speculative_turn_holds_everything_until_confirmed_then_sends_it_in_order() -> None:
    rig = Rig(FakeTTS(seconds_per_word=0.01))
    rig.pipeline.baseline = FakeBaseline()
    turn = spoken()
    assert turn.pending
    task = asyncio.create_task(rig.pipeline.run(turn))
    turn.task = task
    await until(lambda: turn.reply is not None and turn.reply.final_text is not None)
    await asyncio.sleep(0.05)
    # perceived and answered, yet nothing reached the client and the reply is not speaking
    assert rig.outlet.items == [] and rig.speaking == [] and not task.done()
    rig.pipeline.confirm(turn, t_end_wall=2.5)
    assert not turn.pending and turn.t_end_wall == 2.5
    await asyncio.wait_for(task, 5)
    types = rig.outlet.types()
    assert types[0] == "user.perception" and types[-2:] == ["assistant.done", "metrics"]
    assert types.index("assistant.text") < types.index("audio")  # text came while held, audio after
    metrics = rig.outlet.events("metrics")[0]["latency_ms"]
    # perception was ready before the turn ended: negative, and the lead says by how much
    assert metrics["perception"] < 0 < metrics["speculative_lead"]
    assert metrics["perception"] >= -metrics["speculative_lead"]
    assert 0 <= metrics["first_audio_byte"] <= metrics["total"]
    assert rig.speaking[0] is True and rig.speaking[-1] is False
    assert [r.speaker for r in rig.trajectory.records] == ["user", "assistant"]
    assert rig.pipeline.baseline.turns == 1


async def test_a_discarded_speculative_turn_is_never_heard_and_leaves_no_trace() -> None:
    rig = Rig(FakeTTS(seconds_per_word=0.01))
    before = FakeBaseline()
    rig.pipeline.baseline = before
    turn = spoken()
    turn.task = asyncio.create_task(rig.pipeline.run(turn))
    await until(lambda: turn.reply is not None and bool(turn.reply.text))
    assert rig.pipeline.baseline is not before  # the speculative perception replaced the baseline ...
    turn.cancelled = True
    turn.task.cancel()
    await asyncio.wait([turn.task])
    await rig.pipeline.discard(turn)
    assert rig.pipeline.baseline is before and before.turns == 0  # ... and it is back as it was
    assert rig.outlet.items == [] and rig.trajectory.records == [] and rig.speaking in ([], [False])
    assert rig.dialogue.forgotten == [("s1", turn.turn_id)] and rig.dialogue.history["s1"] == []


async def test_a_speculative_turn_that_fails_reports_only_once_confirmed() -> None:
    rig = Rig(FakeTTS())
    turn = Turn.speculative(np.zeros(800, np.float32), 1.0, 1.05)  # too short: the perceiver refuses it
    turn.task = asyncio.create_task(rig.pipeline.run(turn))
    await asyncio.sleep(0.1)
    assert rig.outlet.items == [] and not turn.task.done()
    rig.pipeline.confirm(turn, 1.6)
    await asyncio.wait_for(turn.task, 5)
    assert rig.outlet.types() == ["error"] and rig.outlet.items[0]["code"] == "audio_error"


# -------------------------------------------------------------------------------- over the websocket


def gap(seconds: float) -> np.ndarray:
    return np.zeros(int(16_000 * seconds), np.float32)


async def test_a_pause_then_the_end_of_the_turn_answers_the_turn_begun_at_the_pause(
    voice_server: SimpleNamespace, speech_clip: np.ndarray
) -> None:
    audio = np.concatenate([gap(0.5), speech_clip, gap(1.2)])
    conv = await converse(voice_server.url, audio, 16000, realtime=True, timeout=TIMEOUT)
    assert not conv.errors
    kinds = [e.type for e in conv.events]
    assert kinds.count("user.perception") == 1 and kinds.count("assistant.done") == 1
    assert kinds.index("speech.stopped") < kinds.index("user.perception")
    [metrics] = conv.of_type("metrics")
    # the turn was perceived during the pause, before the VAD confirmed its end
    assert metrics["latency_ms"]["speculative_lead"] > 0 and metrics["latency_ms"]["perception"] < 0
    assert voice_server.services.dialogue.forgotten == []


async def test_speech_after_a_pause_drops_the_speculative_turn_unheard(
    voice_server: SimpleNamespace, speech_clip: np.ndarray
) -> None:
    """A 0.35 s gap: longer than the pause (0.2 s), shorter than the end of a turn (0.5 s)."""
    dialogue, perceiver = voice_server.services.dialogue, voice_server.services.perceiver
    perceiver_baselines = perceiver.baseline_turns_seen
    speech = speech_clip[int(0.35 * 16000) : int(1.7 * 16000)]  # the clip's voiced part
    audio = np.concatenate([gap(0.5), speech, gap(0.35), speech, gap(1.2)])
    async with asyncio.timeout(TIMEOUT):
        conv = await converse(voice_server.url, audio, 16000, realtime=True, timeout=TIMEOUT)
    assert not conv.errors
    kinds = [e.type for e in conv.events]
    # one turn, one answer, to all of it
    assert kinds.count("speech.started") == 1 and kinds.count("speech.stopped") == 1
    [perception] = conv.of_type("user.perception")
    assert float(perception["transcript"].split()[0]) > 2 * len(speech) / 16000 - 0.1
    assert kinds.count("assistant.done") == 1
    turn_ids = {e.event["turn_id"] for e in conv.events if e.event and "turn_id" in e.event}
    assert turn_ids == {perception["turn_id"]}  # nothing of the dropped turn reached the client
    # the dropped turn was perceived and answered speculatively, then forgotten and its baseline undone
    (session_id, dropped), *more = dialogue.forgotten
    assert not more and session_id == conv.session_id and dropped != perception["turn_id"]
    assert [t for t, _ in dialogue.history[conv.session_id]] == [perception["turn_id"]]
    assert perceiver_baselines[-1] == 0 and len(perceiver.durations) >= 2


async def test_a_typed_turn_during_a_pause_replaces_the_speculative_one(
    voice_server: SimpleNamespace, speech_clip: np.ndarray
) -> None:
    dialogue = voice_server.services.dialogue
    async with connect(voice_server.url) as ws:
        started = await start(ws)
        speech = speech_clip[int(0.35 * 16000) : int(1.7 * 16000)]
        for offset in range(0, len(speech), 320):
            await ws.send(float32_to_pcm16(speech[offset : offset + 320]))
        await ws.send(float32_to_pcm16(gap(0.3)))  # a pause, not the end of the turn
        await until(lambda: len(dialogue.history.get(started["session_id"], [])) == 1)
        await ws.send(json.dumps({"type": "input.text", "text": "actually, never mind"}))
        seen: list = []
        await recv_until(ws, "assistant.done", seen)
    [perception] = events_of(seen, "user.perception")
    assert perception["transcript"] == "actually, never mind"
    assert "assistant.interrupted" not in [e["type"] for e in seen if isinstance(e, dict)]
    assert [t for t, _ in dialogue.history[started["session_id"]]] == [perception["turn_id"]]
    assert len(dialogue.forgotten) == 1
