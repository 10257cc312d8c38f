"""Client message parsing, every error code, and the exact shape of server events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.voice.voice_fakes import perception_for
from voice import protocol as proto
from voice.protocol import ErrorCode, ProtocolError


def parse(obj: object, **limits: int) -> proto.ClientMessage:
    return proto.parse_text_frame(json.dumps(obj), **limits)


def code_of(data: str, **limits: int) -> str:
    with pytest.raises(ProtocolError) as info:
        proto.parse_text_frame(data, **limits)
    return info.value.code


def test_session_start_defaults_and_fields() -> None:
    assert parse({"type": "session.start"}) == proto.SessionStart(None, 16_000)
    assert parse(
        {"type": "session.start", "session_id": "abc-1", "sample_rate": 44100}
    ) == proto.SessionStart("abc-1", 44100)
    assert parse({"type": "session.start", "session_id": "", "sample_rate": 8000.0}) == proto.SessionStart(
        None, 8000
    )
    assert parse({"type": "session.start", "extra": 1}) == proto.SessionStart()  # unknown fields ignored


def test_other_messages() -> None:
    assert parse({"type": "input.flush"}) == proto.InputFlush()
    assert parse({"type": "input.text", "text": "  hi there "}) == proto.InputText("hi there")
    assert parse({"type": "session.end"}) == proto.SessionEnd()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ('"session.start"', ErrorCode.BAD_JSON),
        ('{"kind": "session.start"}', ErrorCode.BAD_FIELD),
        ('{"type": 3}', ErrorCode.BAD_FIELD),
        ('{"type": "session.begin"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "session.start", "session_id": 5}', ErrorCode.BAD_FIELD),
        ('{"type": "session.start", "session_id": "a b/../c"}', ErrorCode.BAD_FIELD),
        ('{"type": "session.start", "sample_rate": 4000}', ErrorCode.BAD_SAMPLE_RATE),
        ('{"type": "session.start", "sample_rate": 96000}', ErrorCode.BAD_SAMPLE_RATE),
        ('{"type": "session.start", "sample_rate": "16000"}', ErrorCode.BAD_SAMPLE_RATE),
        ('{"type": "session.start", "sample_rate": true}', ErrorCode.BAD_SAMPLE_RATE),
        ('{"type": "session.start", "sample_rate": 16000.5}', ErrorCode.BAD_SAMPLE_RATE),
        ('{"type": "input.text"}', ErrorCode.BAD_FIELD),
        ('{"type": "input.text", "text": ["a"]}', ErrorCode.BAD_FIELD),
        ('{"type": "input.text", "text": "   "}', ErrorCode.BAD_FIELD),
    ],
)
def test_bad_messages(data: str, code: str) -> None:
    assert code_of(data) == code


def test_limits() -> None:
    assert code_of(json.dumps({"type": "input.text", "text": "x" * 11}), max_text_chars=10) == (
        ErrorCode.TEXT_TOO_LONG
    )
    assert parse({"type": "input.text", "text": "x" * 10}, max_text_chars=10) == proto.InputText("x" * 10)
    big = json.dumps({"type": "input.text", "text": "é" * 600})  # 1200 bytes, 600 characters
    assert code_of(big, max_message_bytes=1000) == ErrorCode.MESSAGE_TOO_LARGE


def test_audio_frames() -> None:
    proto.check_audio_frame(b"\x00\x01" * 10)
    with pytest.raises(ProtocolError) as info:
        proto.check_audio_frame(b"\x00" * 3)
    assert info.value.code == ErrorCode.ODD_BYTES
    with pytest.raises(ProtocolError) as info:
        proto.check_audio_frame(b"\x00" * 2048, max_message_bytes=1024)
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE


def test_pcm_round_trip() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], dtype=np.float32)
    pcm = proto.float32_to_pcm16(x)
    assert len(pcm) == 12
    y = proto.pcm16_to_float32(pcm)
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1e-4)


def test_error_codes_are_distinct() -> None:
    codes = [v for k, v in vars(ErrorCode).items() if k.isupper()]
    assert len(codes) == len(set(codes))
    err = ProtocolError(ErrorCode.ODD_BYTES, "odd")
    assert (err.code, err.message) == ("odd_bytes", "odd")


def test_server_events_match_the_contract() -> None:
    assert proto.session_started_event("s1", True, 22050) == {
        "type": "session.started",
        "session_id": "s1",
        "resumed": True,
        "output_sample_rate": 22050,
    }
    assert proto.speech_started_event() == {"type": "speech.started"}
    assert proto.speech_stopped_event() == {"type": "speech.stopped"}
    assert proto.assistant_text_event("t", "Hi.", "empathize") == {
        "type": "assistant.text",
        "turn_id": "t",
        "text": "Hi.",
        "policy": "empathize",
    }
    assert proto.assistant_delta_event("t", "Hi") == {"type": "assistant.delta", "turn_id": "t", "text": "Hi"}
    assert proto.assistant_done_event("t") == {"type": "assistant.done", "turn_id": "t"}
    assert proto.assistant_interrupted_event("t", "I hear") == {
        "type": "assistant.interrupted",
        "turn_id": "t",
        "heard_text": "I hear",
    }
    assert proto.error_event("bad_json", "x") == {"type": "error", "code": "bad_json", "message": "x"}
    event = json.loads(proto.encode(proto.user_perception_event("t", perception_for("hello", "angry"))))
    assert event["type"] == "user.perception" and event["turn_id"] == "t"
    assert set(event) >= {"transcript", "emotion", "reasoning", "evidence", "model", "timings_ms"}
    assert event["emotion"]["label"] == "angry" and abs(sum(event["emotion"]["scores"].values()) - 1) < 1e-6
