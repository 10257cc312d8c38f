"""The wire format between voice servers and perception workers, and the keys it lives under.

A job is one stream entry (``XADD <stream>``), every field a string or bytes:

=========== =============================================================================================
field       value
=========== =============================================================================================
``v``       format version, ``1``
``job``     the job id (32 hex digits): one turn, the key of its one result
``session`` the conversation (its :class:`~perception.streams.remote.RemoteBaseline`'s id) and ``seq``,
            the turn's number in it (tracing and ordering checks; workers do not need them)
``kind``    ``audio`` or ``text``
``audio``   float32 little-endian samples (``rate`` Hz, ``channels`` interleaved); ``text`` for typed turns
``context`` a typed turn's conversation: the JSON list of its earlier user turns' words, oldest first
            (absent: none)
``baseline`` the speaker baseline's JSON state (:meth:`~perception.base.SpeakerBaseline.to_state`);
            ``{}``: a conversation with no state yet; absent: perceive without a baseline
``timeout_ms`` how long the caller waits: a worker drops a job older than this (the stream entry's id is
            the Redis server's clock at XADD, so no two machines' clocks are compared)
=========== =============================================================================================

The result is a JSON object (:class:`JobResult`) written once per job, by a script that sets
``<stream>:result:{<job>}`` only if it does not exist (``SET NX EX result_ttl_s``) and only then pushes it
onto ``<stream>:done:{<job>}``, the list the caller blocks on. A job delivered twice (its first worker
was presumed dead, or died after writing) therefore has one result and wakes its caller once. Both keys
share a hash tag, so the script also runs on Redis Cluster.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from perception.base import PerceptionError
from perception.types import Perception

FORMAT_VERSION = "1"


class PerceptionTimeout(PerceptionError, TimeoutError):
    """No worker's result for a turn came within ``job_timeout_s`` (no worker running, all of them busy
    or dead for longer than a reclaim takes)."""


class RemotePerceptionError(PerceptionError):
    """A worker could not perceive the turn (``kind``: ``failed``, ``perception`` or ``undeliverable``,
    the last for a job whose workers died ``max_deliveries`` times)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class QueueKeys:
    stream: str

    def result(self, job_id: str) -> str:
        return f"{self.stream}:result:{{{job_id}}}"

    def done(self, job_id: str) -> str:
        return f"{self.stream}:done:{{{job_id}}}"


# XADD with the stream trimmed, in the same call, to entries younger than ARGV[1] ms by the server's clock
# (entries nobody acknowledged: jobs that were never served). ARGV[2..] are the entry's field/value pairs.
ENQUEUE_SCRIPT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('XADD', KEYS[1], 'MINID', '~', tostring(now_ms - tonumber(ARGV[1])), '*', unpack(ARGV, 2))
"""

# The result once: set it if absent, and only then wake the caller. Returns 1 when this call wrote it.
PUBLISH_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Job:
    """One turn to perceive."""

    job_id: str
    kind: Literal["audio", "text"]
    timeout_ms: int
    session: str = ""
    seq: int = 0
    audio: np.ndarray | None = None  # (samples,) or (samples, channels), float32
    sample_rate: int = 16_000
    text: str = ""
    baseline: dict[str, Any] | None = None  # None: no baseline; {}: a conversation's first state
    context: list[str] = field(default_factory=list)  # a typed turn's earlier user turns, oldest first

    def fields(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {
            "v": FORMAT_VERSION,
            "job": self.job_id,
            "session": self.session,
            "seq": str(self.seq),
            "kind": self.kind,
            "timeout_ms": str(self.timeout_ms),
        }
        if self.kind == "audio":
            assert self.audio is not None
            samples = np.ascontiguousarray(self.audio, dtype="<f4")
            out["audio"] = samples.tobytes()
            out["channels"] = str(1 if samples.ndim == 1 else samples.shape[1])
            out["rate"] = str(self.sample_rate)
        else:
            out["text"] = self.text
            if self.context:
                out["context"] = json.dumps(self.context)
        if self.baseline is not None:
            out["baseline"] = json.dumps(self.baseline, separators=(",", ":"))
        return out

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Job:
        """The job of a stream entry; :class:`ValueError` for an entry that is not one."""
        f = {k.decode(): v for k, v in fields.items()}
        version = f.get("v", b"").decode()
        if version != FORMAT_VERSION:
            raise ValueError(f"job format {version!r}, this worker reads {FORMAT_VERSION!r}")
        kind = f["kind"].decode()
        if kind not in ("audio", "text"):
            raise ValueError(f"unknown job kind {kind!r}")
        audio = None
        if kind == "audio":
            audio = np.frombuffer(f["audio"], dtype="<f4").astype(np.float32)
            channels = int(f.get("channels", b"1"))
            if channels > 1:
                audio = audio.reshape(-1, channels)
        return cls(
            job_id=f["job"].decode(),
            kind=kind,  # type: ignore[arg-type]
            timeout_ms=int(f["timeout_ms"]),
            session=f.get("session", b"").decode(),
            seq=int(f.get("seq", b"0")),
            audio=audio,
            sample_rate=int(f.get("rate", b"16000")),
            text=f.get("text", b"").decode(),
            baseline=json.loads(f["baseline"]) if "baseline" in f else None,
            context=[str(t) for t in json.loads(f["context"])] if "context" in f else [],
        )


@dataclass
class JobResult:
    """What a worker answers: the perception and the baseline after the turn, or an error."""

    job_id: str
    worker: str
    session: str = ""
    seq: int = 0
    perception: Perception | None = None
    cues: dict[str, float] = field(default_factory=dict)  # the turn's cue z-scores (perceive_with_cues)
    baseline: dict[str, Any] | None = None
    error: dict[str, str] | None = None  # {"kind": ..., "message": ...}
    deliveries: int = 1  # how many times the job was handed to a worker
    queued_ms: float = 0.0  # from XADD to this worker starting on it (the Redis server's clock)
    perceive_ms: float = 0.0  # the worker's perception of the turn

    def to_json(self) -> str:
        data = {
            "v": FORMAT_VERSION,
            "job": self.job_id,
            "worker": self.worker,
            "session": self.session,
            "seq": self.seq,
            "perception": self.perception.model_dump(mode="json") if self.perception else None,
            "cues": self.cues,
            "baseline": self.baseline,
            "error": self.error,
            "deliveries": self.deliveries,
            "queued_ms": self.queued_ms,
            "perceive_ms": self.perceive_ms,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> JobResult:
        data = json.loads(text)
        perception = data.get("perception")
        return cls(
            job_id=data["job"],
            worker=data.get("worker", ""),
            session=data.get("session", ""),
            seq=int(data.get("seq", 0)),
            perception=Perception.model_validate(perception) if perception else None,
            cues={k: float(v) for k, v in (data.get("cues") or {}).items()},
            baseline=data.get("baseline"),
            error=data.get("error"),
            deliveries=int(data.get("deliveries", 1)),
            queued_ms=float(data.get("queued_ms", 0.0)),
            perceive_ms=float(data.get("perceive_ms", 0.0)),
        )


def entry_ms(entry_id: bytes | str) -> int:
    """The Redis server's clock (ms) when a stream entry was added: the first part of its id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])
