"""The emotional trajectory log: every turn of every session, both speakers, in a Redis Stream.

Stream key ``emo:trajectory:{session_id}``; each entry holds one :class:`TurnRecord` as JSON under the
field ``record``, with ``schema`` = :data:`SCHEMA_VERSION`. ``emo-agent export`` reads it back.
Times ``t_start``/``t_end`` are Unix epoch seconds (float). The record model, its schema version and the
export columns are defined with the records themselves (:mod:`voice.records`) and re-exported here.

Retention: every write (re)sets the key's TTL to ``ttl_s`` (0: no expiry). With ``keep_audio`` on, a user
turn's 16 kHz audio is stored as WAV bytes under ``emo:trajectory-audio:{session_id}:{turn_id}`` (same TTL)
and the record's ``audio_ref`` names that key. Consent is decided by the session (``voice.session``): a
session without consent writes nothing here.

Schema versions: 1 = the record without ``audio_ref``; 2 adds ``audio_ref`` (records of version 1
still load, with ``audio_ref`` empty).

Redis faults: the voice sessions write through :attr:`TrajectoryLog.write_buffer` (a
:class:`~voice.records.RecordBuffer`): while Redis cannot be reached, up to ``buffer_turns`` turns
(``buffer_bytes`` bytes) wait in memory and are written in order when it answers again; ``aclose`` tries
once more before the process exits. :meth:`append` and :meth:`store_audio` themselves raise as redis-py does.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from voice.records import EXPORT_COLUMNS, SCHEMA_VERSION, RecordBuffer, TurnRecord

__all__ = [
    "AUDIO_KEY_PREFIX",
    "EXPORT_COLUMNS",
    "JSON_COLUMNS",
    "KEY_PREFIX",
    "SCHEMA_VERSION",
    "TrajectoryLog",
    "TurnRecord",
    "audio_key",
    "stream_key",
]

KEY_PREFIX = "emo:trajectory:"
AUDIO_KEY_PREFIX = "emo:trajectory-audio:"  # not under KEY_PREFIX, so never read as a stream

# Fields whose values are JSON objects/lists (JSON strings in CSV).
JSON_COLUMNS: frozenset[str] = frozenset({"scores", "evidence", "latency_ms"})


def stream_key(session_id: str) -> str:
    return f"{KEY_PREFIX}{session_id}"


def audio_key(session_id: str, turn_id: str) -> str:
    return f"{AUDIO_KEY_PREFIX}{session_id}:{turn_id}"


class TrajectoryLog:
    """Append and read turn records. One instance serves all sessions (redis-py's pool is shared).

    ``consent_default`` (used when a client does not say), ``keep_audio`` and ``dialogue_model`` (the model
    id written on assistant records) are read by the voice session, which writes through ``write_buffer``.
    ``buffer_turns`` = 0 buffers nothing: a turn that ends while Redis is unreachable is not logged.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        ttl_s: int = 0,
        *,
        consent_default: bool = True,
        keep_audio: bool = False,
        dialogue_model: str | None = None,
        buffer_turns: int = 1000,
        buffer_bytes: int = 64 << 20,
        write_timeout_s: float = 2.0,
    ) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self.consent_default = consent_default
        self.keep_audio = keep_audio
        self.dialogue_model = dialogue_model
        # Every Redis error is a state of the server (down, loading, out of memory, read-only replica),
        # so it is retried; anything else (a bug) drops the turn with a logged traceback.
        self.write_buffer = RecordBuffer(
            self,
            max_turns=buffer_turns,
            max_bytes=buffer_bytes,
            write_timeout_s=write_timeout_s,
            retry_on=(OSError, RedisError),
        )

    async def aclose(self) -> None:
        """Stop retrying buffered writes after one last attempt (the Redis client stays the caller's)."""
        await self.write_buffer.aclose()

    async def store_audio(self, session_id: str, turn_id: str, wav: bytes) -> str:
        """Store one user turn's WAV bytes (same TTL as the stream); returns the key for ``audio_ref``."""
        key = audio_key(session_id, turn_id)
        await self._redis.set(key, wav, ex=self._ttl_s if self._ttl_s > 0 else None)
        return key

    async def read_audio(self, key: str) -> bytes | None:
        if not key.startswith(AUDIO_KEY_PREFIX):
            raise ValueError(f"not a trajectory audio key: {key!r}")
        data = await self._redis.get(key)
        return bytes(data) if data is not None else None

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
