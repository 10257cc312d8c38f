"""Per-turn metrics: the ``metrics`` event after each turn and the Prometheus ``GET /metrics``."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.voice.test_voice_pipeline import Rig
from tests.voice.test_voice_session import http_get, recv_until, start, text_turn
from tests.voice.voice_fakes import FakeTTS
from voice.metrics import MAX_STAGES, VoiceMetrics, turn_stages
from voice.pipeline import Turn


def samples(metrics: VoiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scrape, keyed by (name, sorted labels)."""
    body, _ = metrics.render()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# ------------------------------------------------------------------------------------------ VoiceMetrics


def test_turn_stages_prefix_the_perceivers_own_timings() -> None:
    stages = turn_stages({"perception": 120.0, "total": 900.0}, {"asr": 80.0, "acoustics": 30.0})
    assert stages == {
        "perception": 120.0,
        "total": 900.0,
        "perception_asr": 80.0,
        "perception_acoustics": 30.0,
    }


def test_a_turn_is_counted_and_each_stage_observed_in_seconds() -> None:
    m = VoiceMetrics()
    m.observe_turn("done", {"perception": 250.0, "first_audio_byte": 700.0}, 700.0)
    m.observe_turn("interrupted", {"perception": 50.0}, None)
    got = samples(m)
    assert got[("emo_turns_total", (("outcome", "done"),))] == 1
    assert got[("emo_turns_total", (("outcome", "interrupted"),))] == 1
    assert got[("emo_turns_total", (("outcome", "failed"),))] == 0  # present before any failure
    assert got[("emo_turn_stage_seconds_count", (("stage", "perception"),))] == 2
    assert got[("emo_turn_stage_seconds_sum", (("stage", "perception"),))] == 0.3
    # 0.25 s falls in the 0.3 s bucket, not in the 0.2 s one
    assert got[("emo_turn_stage_seconds_bucket", (("le", "0.2"), ("stage", "perception")))] == 1
    assert got[("emo_turn_stage_seconds_bucket", (("le", "0.3"), ("stage", "perception")))] == 2
    assert got[("emo_turn_end_to_end_seconds_count", ())] == 1
    assert got[("emo_turn_end_to_end_seconds_sum", ())] == 0.7


def test_odd_stage_names_are_skipped_and_stages_done_before_the_turn_ended_count_as_zero() -> None:
    m = VoiceMetrics()
    m.observe_turn("done", {"Bad Name": 1.0, "x" * 80: 1.0, "early": -120.0, "fine": 10.0}, 300.0)
    got = samples(m)
    stages = {labels[0][1] for (name, labels) in got if name == "emo_turn_stage_seconds_count"}
    assert stages == {"fine", "early"}
    assert got[("emo_turn_stage_seconds_sum", (("stage", "early"),))] == 0
    assert got[("emo_turn_stage_seconds_bucket", (("le", "0.05"), ("stage", "early")))] == 1


def test_the_number_of_stage_series_is_bounded() -> None:
    m = VoiceMetrics()
    m.observe_turn("done", {f"stage_{i}": 1.0 for i in range(MAX_STAGES + 10)}, None)
    stages = {labels for (name, labels) in samples(m) if name == "emo_turn_stage_seconds_count"}
    assert len(stages) == MAX_STAGES


def test_connections_and_errors_are_counted_and_registries_are_separate() -> None:
    a, b = VoiceMetrics(), VoiceMetrics()
    with a.connection():
        assert samples(a)[("emo_active_sessions", ())] == 1
        a.error("bad_json")
        a.error("bad_json")
    assert samples(a)[("emo_active_sessions", ())] == 0
    assert samples(a)[("emo_errors_total", (("code", "bad_json"),))] == 2
    assert ("emo_errors_total", (("code", "bad_json"),)) not in samples(b)
    a.speculation("discarded")
    assert samples(a)[("emo_speculative_turns_total", (("outcome", "discarded"),))] == 1
    assert samples(a)[("emo_speculative_turns_total", (("outcome", "confirmed"),))] == 0


def test_openmetrics_when_asked_for() -> None:
    body, ctype = VoiceMetrics().render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text") and body.rstrip().endswith(b"# EOF")
    _, plain = VoiceMetrics().render(None)
    assert plain.startswith("text/plain")


# ---------------------------------------------------------------------------------------- the pipeline


async def test_a_done_turn_ends_with_its_metrics_event() -> None:
    rig = Rig(FakeTTS(seconds_per_word=0.01))
    metrics = VoiceMetrics()
    rig.pipeline._metrics = metrics
    turn = Turn.typed("hello")
    await rig.pipeline.run(turn)
    event = rig.outlet.items[-1]
    assert event["type"] == "metrics" and event["turn_id"] == turn.turn_id and event["outcome"] == "done"
    lat = event["latency_ms"]
    stages = ("perception", "llm_first_token", "first_sentence", "first_audio_byte", "reply_text", "total")
    for stage in stages:
        assert stage in lat and lat[stage] >= 0
    assert lat["perception"] <= lat["llm_first_token"] <= lat["first_audio_byte"] <= lat["total"]
    assert event["perception_ms"] == (turn.perception.timings_ms if turn.perception else None)
    got = samples(metrics)
    assert got[("emo_turns_total", (("outcome", "done"),))] == 1
    assert got[("emo_turn_end_to_end_seconds_count", ())] == 1
    assert got[("emo_turn_end_to_end_seconds_sum", ())] == lat["first_audio_byte"] / 1000


async def test_a_failed_turn_is_counted_as_failed_with_its_error_code() -> None:
    rig = Rig(FakeTTS())
    metrics = VoiceMetrics()
    rig.pipeline._metrics = metrics
    await rig.pipeline.run(Turn.spoken(np.zeros(800, dtype=np.float32), 1.0, 1.05))  # refused: too short
    assert rig.outlet.types() == ["error"]  # no perception was sent, so no metrics event either
    got = samples(metrics)
    assert got[("emo_turns_total", (("outcome", "failed"),))] == 1
    assert got[("emo_errors_total", (("code", "audio_error"),))] == 1


# ------------------------------------------------------------------------------------------ the server


async def test_metrics_event_and_prometheus_endpoint(voice_server: SimpleNamespace) -> None:
    async with connect(voice_server.url) as ws:
        await start(ws)
        seen = await text_turn(ws, "hello")
        turn_id = next(e for e in seen if isinstance(e, dict) and e["type"] == "user.perception")["turn_id"]
        event = await recv_until(ws, "metrics")
        assert event["turn_id"] == turn_id and event["outcome"] == "done"
        await ws.send("{not json")
        await recv_until(ws, "error")
        status, ctype, body = await asyncio.to_thread(http_get, voice_server.http + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        scraped = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        assert scraped[("emo_active_sessions", ())] == 1
        assert scraped[("emo_turns_total", (("outcome", "done"),))] == 1
        assert scraped[("emo_errors_total", (("code", "bad_json"),))] == 1
        assert scraped[("emo_turn_stage_seconds_count", (("stage", "first_audio_byte"),))] == 1
        await ws.send(json.dumps({"type": "session.end"}))
