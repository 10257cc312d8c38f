"""The emotional trajectory log: every turn of every session, both speakers, in a Redis Stream.

Stream key ``emo:trajectory:{session_id}``; each entry holds one :class:`TurnRecord` as JSON under the
field ``record``, with ``schema`` = :data:`SCHEMA_VERSION`. ``emo-agent export`` reads it back.
Times ``t_start``/``t_end`` are Unix epoch seconds (float).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

SCHEMA_VERSION = 1
KEY_PREFIX = "emo:trajectory:"

# Columns of an export row, in order (docs/contracts.md).
EXPORT_COLUMNS: tuple[str, ...] = (
    "session_id",
    "turn_id",
    "speaker",
    "t_start",
    "t_end",
    "transcript",
    "label",
    "scores",
    "valence",
    "arousal",
    "reasoning",
    "evidence",
    "policy",
    "model",
    "interrupted",
    "latency_ms",
    "schema_version",
)
# Fields whose values are JSON objects/lists (JSON strings in CSV).
JSON_COLUMNS: frozenset[str] = frozenset({"scores", "evidence", "latency_ms"})


class TurnRecord(BaseModel):
    session_id: str
    turn_id: str
    speaker: Literal["user", "assistant"]
    t_start: float
    t_end: float
    transcript: str = ""
    label: str | None = None
    scores: dict[str, float] | None = None
    valence: float | None = None
    arousal: float | None = None
    reasoning: str | None = None
    evidence: list[dict[str, Any]] | None = None
    policy: str | None = None
    model: str | None = None
    interrupted: bool = False
    latency_ms: dict[str, float] = Field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def row(self) -> dict[str, Any]:
        """The export row: every column of :data:`EXPORT_COLUMNS`."""
        data = self.model_dump()
        return {name: data.get(name) for name in EXPORT_COLUMNS}


def stream_key(session_id: str) -> str:
    return f"{KEY_PREFIX}{session_id}"


class TrajectoryLog:
    """Append and read turn records. One instance serves all sessions (redis-py's pool is shared)."""

    def __init__(self, client: aioredis.Redis, ttl_s: int = 0) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    async def append(self, record: TurnRecord) -> str:
        key = stream_key(record.session_id)
        entry_id = await self._redis.xadd(
            key, {"schema": str(SCHEMA_VERSION), "record": record.model_dump_json()}
        )
        if self._ttl_s > 0:
            await self._redis.expire(key, self._ttl_s)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def read(self, session_id: str) -> list[TurnRecord]:
        entries = await self._redis.xrange(stream_key(session_id))
        records = []
        for _entry_id, fields in entries:
            raw = fields.get(b"record") or fields.get("record")
            records.append(TurnRecord.model_validate(json.loads(raw)))
        return records

    async def exists(self, session_id: str) -> bool:
        return bool(await self._redis.exists(stream_key(session_id)))

    async def sessions(self) -> list[str]:
        found = []
        async for key in self._redis.scan_iter(match=f"{KEY_PREFIX}*"):
            name = key.decode() if isinstance(key, bytes) else key
            found.append(name[len(KEY_PREFIX) :])
        return sorted(found)
