"""The websocket protocol of ``/ws``: client messages parsed into types, server events built as dicts.

Audio travels as raw PCM signed 16-bit little-endian mono in binary frames; everything else is a JSON text
frame with a ``type`` field. This module does no I/O: :func:`parse_text_frame` and :func:`check_audio_frame`
turn frames into typed messages or raise :class:`ProtocolError`; the ``*_event`` builders produce exactly the
events of the contract (``docs/voice.md`` walks through an exchange). Unknown extra fields in client
messages are ignored, so clients may add their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.types import Perception

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000
DEFAULT_SAMPLE_RATE = 16_000
MAX_SESSION_ID_CHARS = 128
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")


class ErrorCode:
    """Codes carried by ``error`` events. Clients may switch on them; messages are for people."""

    BAD_JSON = "bad_json"  # text frame is not a JSON object
    UNKNOWN_TYPE = "unknown_type"  # ``type`` names no client message
    BAD_FIELD = "bad_field"  # a field is missing or has the wrong type/shape
    BAD_SAMPLE_RATE = "bad_sample_rate"  # sample_rate not an integer in [8000, 48000]
    TEXT_TOO_LONG = "text_too_long"  # input.text longer than max_text_chars
    MESSAGE_TOO_LARGE = "message_too_large"  # frame larger than max_message_bytes
    NOT_STARTED = "not_started"  # anything but session.start before session.start
    ALREADY_STARTED = "already_started"  # a second session.start on one connection
    ODD_BYTES = "odd_bytes"  # binary frame with an odd byte count (not 16-bit PCM)
    NO_SPEECH = "no_speech"  # input.flush with no speech since the previous turn
    AUDIO_ERROR = "audio_error"  # the turn's audio could not be perceived (too short, silent...)
    SESSION_FAILED = "session_failed"  # the session could not start (e.g. history store unreachable)
    TURN_FAILED = "turn_failed"  # perception, dialogue or TTS failed for this turn
    PERCEPTION_TIMEOUT = "perception_timeout"  # no perception worker answered in time (queue mode)
    INTERNAL_ERROR = "internal_error"  # an unexpected server error while handling one frame
    RATE_LIMITED = "rate_limited"  # frames faster than message_rate/message_burst: this one was dropped
    SERVER_BUSY = "server_busy"  # max_sessions open already: the connection is closed with 1013
    TOO_MANY_SESSIONS = "too_many_sessions"  # max_sessions_per_client from this address: closed with 1013
    IDLE_TIMEOUT = "idle_timeout"  # no frame for idle_timeout_s: the connection is closed with 1000


class WarningCode:
    """Codes carried by ``warning`` events: something the client may want to show, nothing has failed."""

    # The trajectory log (Redis) is unreachable: this turn's records wait in the server's memory and are
    # written, in order, when it is back.
    TRAJECTORY_BUFFERED = "trajectory_buffered"
    # The trajectory log is unreachable and its buffer is full (or it refused the records): this turn is
    # not in the log. The conversation itself goes on.
    TRAJECTORY_DROPPED = "trajectory_dropped"


class ProtocolError(Exception):
    """A bad client input. Becomes an ``error`` event; the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------- client →


@dataclass(frozen=True)
class SessionStart:
    """``session.start``: ``session_id`` resumes a conversation's history; audio at ``sample_rate``.

    ``consent``: true lets the session's turns go to the research trajectory log, false logs nothing there;
    ``None`` (field absent) means the server's default (``EMO_TRAJECTORY__CONSENT_DEFAULT``).
    """

    session_id: str | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    consent: bool | None = None


@dataclass(frozen=True)
class InputFlush:
    """``input.flush``: the user's turn ends now (push-to-talk release, end of a file)."""


@dataclass(frozen=True)
class InputText:
    """``input.text``: a typed turn."""

    text: str


@dataclass(frozen=True)
class SessionEnd:
    """``session.end``: the client is done; the server closes the connection normally."""


ClientMessage = SessionStart | InputFlush | InputText | SessionEnd


def _parse_session_start(obj: dict[str, Any]) -> SessionStart:
    session_id = obj.get("session_id")
    if session_id is not None:
        if not isinstance(session_id, str):
            raise ProtocolError(ErrorCode.BAD_FIELD, "session_id must be a string")
        if session_id == "":
            session_id = None
        elif len(session_id) > MAX_SESSION_ID_CHARS or not _SESSION_ID_RE.match(session_id):
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"session_id must be 1-{MAX_SESSION_ID_CHARS} characters of letters, digits and _.:-",
            )
    rate = obj.get("sample_rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ProtocolError(ErrorCode.BAD_SAMPLE_RATE, "sample_rate must be an integer (Hz)")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            ErrorCode.BAD_SAMPLE_RATE,
            f"sample_rate {rate} outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
        )
    consent = obj.get("consent")
    if consent is not None and not isinstance(consent, bool):
        raise ProtocolError(ErrorCode.BAD_FIELD, "consent must be true or false")
    return SessionStart(session_id=session_id, sample_rate=rate, consent=consent)


def _parse_input_text(obj: dict[str, Any], max_text_chars: int) -> InputText:
    text = obj.get("text")
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "input.text needs a string field 'text'")
    if len(text) > max_text_chars:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG, f"text has {len(text)} characters; the limit is {max_text_chars}"
        )
    if not text.strip():
        raise ProtocolError(ErrorCode.BAD_FIELD, "input.text needs non-empty 'text'")
    return InputText(text=text.strip())


def parse_text_frame(
    data: str, *, max_text_chars: int = 2000, max_message_bytes: int = 1 << 20
) -> ClientMessage:
    """Parse one JSON text frame. Raises :class:`ProtocolError` with a code from :class:`ErrorCode`."""
    if len(data) > max_message_bytes or len(data.encode("utf-8", "surrogatepass")) > max_message_bytes:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"text frame larger than {max_message_bytes} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a message must be a JSON object with a 'type' field")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "a message needs a string field 'type'")
    if kind == "session.start":
        return _parse_session_start(obj)
    if kind == "input.flush":
        return InputFlush()
    if kind == "input.text":
        return _parse_input_text(obj, max_text_chars)
    if kind == "session.end":
        return SessionEnd()
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}")


def check_audio_frame(data: bytes, *, max_message_bytes: int = 1 << 20) -> None:
    """Validate a binary frame as PCM16 mono. Raises :class:`ProtocolError` (message_too_large, odd_bytes)."""
    if len(data) > max_message_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"binary frame of {len(data)} bytes; the limit is {max_message_bytes}",
        )
    if len(data) % 2:
        raise ProtocolError(
            ErrorCode.ODD_BYTES, f"binary frame of {len(data)} bytes: 16-bit PCM needs an even count"
        )


def pcm16_to_float32(data: bytes) -> np.ndarray:
    """PCM signed 16-bit little-endian → float32 in [-1, 1). Shape ``(n_samples,)``."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_pcm16(audio: np.ndarray) -> bytes:
    """float32 in [-1, 1] → PCM signed 16-bit little-endian (clipped)."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


# ---------------------------------------------------------------------------------------------- server →


def encode(event: dict[str, Any]) -> str:
    """Serialise a server event as one JSON text frame."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def session_started_event(
    session_id: str, resumed: bool, output_sample_rate: int, consent: bool | None = None
) -> dict[str, Any]:
    """``session.started``; ``consent`` (the trajectory-log consent in effect) is echoed when given."""
    event: dict[str, Any] = {
        "type": "session.started",
        "session_id": session_id,
        "resumed": resumed,
        "output_sample_rate": output_sample_rate,
    }
    if consent is not None:
        event["consent"] = consent
    return event


def speech_started_event() -> dict[str, Any]:
    return {"type": "speech.started"}


def speech_stopped_event() -> dict[str, Any]:
    return {"type": "speech.stopped"}


def user_perception_event(turn_id: str, perception: Perception) -> dict[str, Any]:
    """``user.perception``: the turn id followed by every :class:`Perception` field."""
    return {"type": "user.perception", "turn_id": turn_id, **perception.model_dump(mode="json")}


def assistant_delta_event(turn_id: str, text: str) -> dict[str, Any]:
    return {"type": "assistant.delta", "turn_id": turn_id, "text": text}


def assistant_text_event(turn_id: str, text: str, policy: str) -> dict[str, Any]:
    return {"type": "assistant.text", "turn_id": turn_id, "text": text, "policy": policy}


def assistant_done_event(turn_id: str) -> dict[str, Any]:
    return {"type": "assistant.done", "turn_id": turn_id}


def assistant_interrupted_event(turn_id: str, heard_text: str) -> dict[str, Any]:
    return {"type": "assistant.interrupted", "turn_id": turn_id, "heard_text": heard_text}


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def warning_event(code: str, message: str) -> dict[str, Any]:
    """``warning``: a code from :class:`WarningCode` and a message for people; the turn is unaffected."""
    return {"type": "warning", "code": code, "message": message}


def metrics_event(
    turn_id: str,
    outcome: str,
    latency_ms: dict[str, float],
    perception_ms: dict[str, float] | None = None,
) -> dict[str, Any]:
    """``metrics``: the latencies of one ended turn, the last event of that turn.

    ``outcome`` is ``done``, ``interrupted`` or ``failed``; ``latency_ms`` holds every stage the turn reached
    (ms since the user's turn ended, plus the dialogue engine's ``dialogue_*`` durations);
    ``perception_ms`` the perceiver's own sub-stage durations (``asr``, ``acoustics``, ...).
    """
    return {
        "type": "metrics",
        "turn_id": turn_id,
        "outcome": outcome,
        "latency_ms": dict(latency_ms),
        "perception_ms": dict(perception_ms or {}),
    }
