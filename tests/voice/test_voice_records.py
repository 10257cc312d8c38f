"""Building a turn's trajectory records and the WAV of its audio (voice.records), without Redis or sockets."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np
import pytest

from perception.types import Evidence
from tests.voice.voice_fakes import FakeTrajectory, perception_for
from voice.records import (
    EXPORT_COLUMNS,
    SCHEMA_VERSION,
    TurnRecord,
    TurnRecorder,
    assistant_record,
    user_record,
    wav_bytes,
)


def test_the_user_record_carries_every_perception_field() -> None:
    p = perception_for("It's eleven o'clock.", "angry")
    p.evidence.append(Evidence(kind="lexical", claim="blunt words", quote="eleven"))
    p.timings_ms = {"asr": 12.5, "estimate": 3}
    rec = user_record("s1", "t1", p, t_start=100.0, t_end=102.5)
    assert (rec.speaker, rec.session_id, rec.turn_id) == ("user", "s1", "t1")
    assert (rec.t_start, rec.t_end) == (100.0, 102.5)
    assert rec.transcript == "It's eleven o'clock."
    assert (rec.label, rec.valence, rec.arousal) == ("angry", -0.4, 0.6)
    assert rec.scores == p.emotion.scores and rec.reasoning == p.reasoning and rec.model == "fake@1"
    # Evidence as JSON, without the fields an item does not use.
    assert rec.evidence == [
        {"kind": "acoustic", "cue": "pitch_mean", "value": 1.5, "claim": "raised pitch"},
        {"kind": "lexical", "claim": "blunt words", "quote": "eleven"},
    ]
    assert rec.latency_ms == {"perception_asr": 12.5, "perception_estimate": 3.0}
    assert rec.policy is None and rec.interrupted is False and rec.audio_ref is None
    assert rec.schema_version == SCHEMA_VERSION == 2


def assistant(**overrides: Any) -> TurnRecord:
    fields: dict[str, Any] = {
        "started": 200.0,
        "now": 203.0,
        "policy": "empathize",
        "model": "fake-llm@1",
        "interrupted": True,
        "latency_ms": {"perception": 40.0, "total": 900.0},
        **overrides,
    }
    return assistant_record("s1", "t1", "That sounds", **fields)


def test_the_assistant_record_spans_the_playback_and_keeps_what_was_heard() -> None:
    rec = assistant()
    assert (rec.speaker, rec.t_start, rec.t_end) == ("assistant", 200.0, 203.0)
    assert (rec.transcript, rec.policy, rec.model) == ("That sounds", "empathize", "fake-llm@1")
    assert rec.interrupted is True
    assert rec.label is None and rec.scores is None and rec.evidence is None


def test_the_assistant_record_never_ends_before_it_starts() -> None:
    rec = assistant(started=500.0, now=499.0)  # the clock read before the first frame's stamp
    assert rec.t_start == rec.t_end == 500.0


def test_the_assistant_record_copies_the_latencies() -> None:
    latency = {"perception": 40.0}
    rec = assistant(latency_ms=latency)
    latency["total"] = 1.0
    assert rec.latency_ms == {"perception": 40.0}


def test_rows_have_the_export_columns_in_order() -> None:
    row = assistant().row()
    assert tuple(row) == EXPORT_COLUMNS
    assert row["schema_version"] == SCHEMA_VERSION and row["interrupted"] is True


def test_agent_trajectory_re_exports_the_record_model() -> None:
    import agent.trajectory as trajectory

    assert trajectory.TurnRecord is TurnRecord
    assert trajectory.SCHEMA_VERSION == SCHEMA_VERSION and trajectory.EXPORT_COLUMNS is EXPORT_COLUMNS


def test_wav_bytes_is_16_bit_mono_16_khz_of_the_same_samples() -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0], dtype=np.float32)
    with wave.open(io.BytesIO(wav_bytes(audio))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16_000)
        assert wav.getnframes() == len(audio)
        samples = np.frombuffer(wav.readframes(len(audio)), dtype="<i2")
    # Out-of-range values are clipped, not wrapped.
    np.testing.assert_allclose(samples / 32767, np.clip(audio, -1, 1), atol=1e-4)


def records() -> tuple[TurnRecord, TurnRecord]:
    user = user_record("s1", "t1", perception_for("hi"), t_start=1.0, t_end=2.0)
    return user, assistant()


async def test_the_recorder_appends_user_then_assistant() -> None:
    log = FakeTrajectory()
    user, reply = records()
    await TurnRecorder(log).write(user, reply, np.zeros(1600, dtype=np.float32))
    assert [r.speaker for r in log.records] == ["user", "assistant"]
    assert log.audio == {} and log.records[0].audio_ref is None  # keep_audio is off


async def test_the_recorder_stores_kept_audio_and_names_it_on_the_user_record() -> None:
    log = FakeTrajectory(keep_audio=True)
    user, reply = records()
    audio = np.full(800, 0.25, dtype=np.float32)
    await TurnRecorder(log).write(user, reply, audio)
    assert log.records[0].audio_ref == "audio:s1:t1" and log.records[1].audio_ref is None
    assert log.audio["audio:s1:t1"] == wav_bytes(audio)


async def test_the_recorder_stores_no_audio_for_a_typed_turn() -> None:
    log = FakeTrajectory(keep_audio=True)
    await TurnRecorder(log).write(*records(), None)
    assert log.audio == {} and len(log.records) == 2 and log.records[0].audio_ref is None


class BrokenLog(FakeTrajectory):
    async def append(self, record: TurnRecord) -> str:
        raise ConnectionError("redis went away")


async def test_a_failing_log_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    await TurnRecorder(BrokenLog()).write(*records(), None)
    assert "could not append turn t1" in caplog.text


async def test_a_recorder_without_a_log_writes_nothing_and_reads_defaults() -> None:
    recorder = TurnRecorder(None)
    await recorder.write(*records(), None)  # no error
    assert recorder.consent_default is True and recorder.dialogue_model is None


def test_the_recorder_reads_the_logs_optional_settings() -> None:
    recorder = TurnRecorder(FakeTrajectory(consent_default=False, dialogue_model="m@2"))
    assert recorder.consent_default is False and recorder.dialogue_model == "m@2"

    class Bare:
        async def append(self, record: TurnRecord) -> None: ...

        async def store_audio(self, session_id: str, turn_id: str, wav: bytes) -> str:
            return ""

    bare = TurnRecorder(Bare())
    assert bare.consent_default is True and bare.dialogue_model is None
