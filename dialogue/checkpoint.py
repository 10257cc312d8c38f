"""The dialogue's checkpointer: sessions live in memory and are written behind to Redis.

:class:`WriteBehindSaver` is the LangGraph checkpointer of :class:`dialogue.engine.DialogueEngine`. Every
checkpoint a turn produces goes first into a bounded in-memory store (a LangGraph ``InMemorySaver`` that
keeps the latest ``keep_checkpoints`` checkpoints of each of the ``max_threads`` most recently active
sessions), then, in order, to Redis (``langgraph-checkpoint-plainredis``) from one background task. So:

- a reply never waits for Redis, and the conversation goes on while Redis is down: the session's history
  is the one in memory;
- the writes made while Redis is unreachable wait in a bounded queue (``max_pending`` operations, about
  16 per turn) and are replayed, in order, when it is back; :attr:`WriteBehindSaver.degraded` tells
  whether writes are waiting on Redis. A full queue drops its oldest write (logged as an error);
- a session not in memory is loaded from Redis on first use (it resumes). If Redis is down at that moment
  the session starts afresh in memory (logged as a warning) and, once Redis is back, its new turns are
  written after the ones already there.

:meth:`WriteBehindSaver.flush` waits until every queued write has reached Redis (shutdown calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.memory import InMemorySaver
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# What a failing Redis call raises: the client's errors, a socket error, or our own time limit.
REMOTE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


class _MemoryStore(InMemorySaver):
    """An ``InMemorySaver`` that can forget old checkpoints of a thread (and the blobs only they used)."""

    def __init__(self, serde: Any = None) -> None:
        super().__init__(serde=serde)
        self._blob_keys: dict[str, set[tuple[str, str, str, Any]]] = {}
        self._versions: dict[tuple[str, str, str], dict[str, Any]] = {}

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        config = {**config, "configurable": {**config["configurable"], "checkpoint_ns": ns}}
        keys = self._blob_keys.setdefault(thread_id, set())
        keys.update((thread_id, ns, channel, version) for channel, version in new_versions.items())
        self._versions[(thread_id, ns, checkpoint["id"])] = dict(checkpoint["channel_versions"])
        return super().put(config, checkpoint, metadata, new_versions)

    def prune(self, thread_id: str, keep: int, pinned: set[str]) -> None:
        """Keep the newest ``keep`` checkpoints of each namespace of ``thread_id`` (and any in ``pinned``)."""
        referenced: set[tuple[str, str, str, Any]] = set()
        for ns, checkpoints in self.storage.get(thread_id, {}).items():
            newest = sorted(checkpoints, reverse=True)  # checkpoint ids sort by time
            for cid in newest[keep:]:
                if cid in pinned:
                    continue
                del checkpoints[cid]
                self.writes.pop((thread_id, ns, cid), None)
                self._versions.pop((thread_id, ns, cid), None)
            for cid in checkpoints:
                versions = self._versions.get((thread_id, ns, cid), {})
                referenced.update((thread_id, ns, channel, version) for channel, version in versions.items())
        keys = self._blob_keys.get(thread_id, set())
        for key in keys - referenced:
            self.blobs.pop(key, None)
        keys &= referenced

    def delete_thread(self, thread_id: str) -> None:
        for ns, checkpoints in self.storage.pop(thread_id, {}).items():
            for cid in checkpoints:
                self.writes.pop((thread_id, ns, cid), None)
                self._versions.pop((thread_id, ns, cid), None)
        for key in self._blob_keys.pop(thread_id, set()):
            self.blobs.pop(key, None)


class WriteBehindSaver(BaseCheckpointSaver):
    """A checkpointer serving sessions from memory and writing them behind to ``remote`` (see module doc)."""

    def __init__(
        self,
        remote: BaseCheckpointSaver,
        *,
        max_threads: int = 1000,
        keep_checkpoints: int = 64,
        max_pending: int = 20_000,
        write_timeout_s: float = 2.0,
        retry_s: float = 0.5,
    ) -> None:
        super().__init__(serde=remote.serde)
        self.remote = remote
        self.local = _MemoryStore(serde=remote.serde)
        self.max_threads = max_threads
        self.keep_checkpoints = keep_checkpoints
        self.max_pending = max_pending
        self.write_timeout_s = write_timeout_s
        self.retry_s = retry_s
        self._hot: OrderedDict[str, None] = OrderedDict()  # threads in memory, least recently used first
        self._pending: deque[tuple[str, str, Callable[[], Awaitable[Any]]]] = deque()
        self._pinned: dict[str, dict[str, int]] = {}  # thread -> checkpoint id -> queued writes using it
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.degraded = False
        self.dropped = 0

    # ------------------------------------------------------------------------------------------ reads

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = config["configurable"]["thread_id"]
        if thread_id not in self._hot:
            await self._load(thread_id)
        found = await self.local.aget_tuple(config)
        if found is None and get_checkpoint_id(config) is not None and thread_id not in self._pinned:
            with contextlib.suppress(*REMOTE_ERRORS):  # an old checkpoint only Redis still has
                return await asyncio.wait_for(self.remote.aget_tuple(config), self.write_timeout_s)
        return found

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None and config["configurable"]["thread_id"] not in self._hot:
            await self._load(config["configurable"]["thread_id"])
        async for item in self.local.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def _load(self, thread_id: str) -> None:
        """Bring a session into memory: its latest checkpoint from Redis, or nothing if Redis is down."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        try:
            latest = await asyncio.wait_for(self.remote.aget_tuple(config), self.write_timeout_s)
        except REMOTE_ERRORS as exc:
            log.warning("session %s: history unavailable (%s); going on from memory", thread_id, exc)
            latest = None
        if thread_id in self._hot:  # loaded meanwhile by a concurrent read
            return
        if latest is not None:
            checkpoint = latest.checkpoint
            parent = latest.parent_config or config
            saved = self.local.put(parent, checkpoint, latest.metadata, dict(checkpoint["channel_versions"]))
            by_task: dict[str, list[tuple[str, Any]]] = {}
            for task_id, channel, value in latest.pending_writes or ():
                by_task.setdefault(task_id, []).append((channel, value))
            for task_id, writes in by_task.items():
                self.local.put_writes(saved, writes, task_id)
        self._touch(thread_id)

    # ----------------------------------------------------------------------------------------- writes

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = config["configurable"]["thread_id"]
        saved = self.local.put(config, checkpoint, metadata, new_versions)
        self._touch(thread_id)
        ns, cid = saved["configurable"]["checkpoint_ns"], checkpoint["id"]
        versions = dict(new_versions)

        async def write() -> None:
            stored = self.local.get_tuple(saved)  # a fresh copy: what the graph held may have changed since
            if stored is not None:
                root: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
                parent = stored.parent_config or root
                await self.remote.aput(parent, stored.checkpoint, stored.metadata, versions)

        self._enqueue(thread_id, cid, write)  # older checkpoints are pruned once their writes are done
        return saved

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id = config["configurable"]["thread_id"]
        self.local.put_writes(config, writes, task_id, task_path)
        self._touch(thread_id)
        held = [(channel, self.serde.dumps_typed(value)) for channel, value in writes]

        async def write() -> None:
            values = [(channel, self.serde.loads_typed(value)) for channel, value in held]
            await self.remote.aput_writes(config, values, task_id, task_path)

        self._enqueue(thread_id, str(config["configurable"].get("checkpoint_id", "")), write)

    async def adelete_thread(self, thread_id: str) -> None:
        self.local.delete_thread(thread_id)
        self._touch(thread_id)  # known, and empty: not to be loaded again from Redis
        self._enqueue(thread_id, "", lambda: self.remote.adelete_thread(thread_id))

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.remote.get_next_version(current, channel)

    # ------------------------------------------------------------------------------ the Redis queue

    @property
    def pending(self) -> int:
        """Writes waiting for Redis."""
        return len(self._pending)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued write has reached Redis (at most ``timeout_s``); True if all did."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        if self._pending:
            log.error("%d dialogue checkpoint writes not in Redis", len(self._pending))
        return not self._pending

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    def _enqueue(self, thread_id: str, cid: str, write: Callable[[], Awaitable[Any]]) -> None:
        if len(self._pending) >= self.max_pending:
            old_thread, old_cid, _ = self._pending.popleft()
            self._unpin(old_thread, old_cid)
            self.dropped += 1
            log.error("dialogue write queue full (%d): the oldest write is dropped", self.max_pending)
        self._pending.append((thread_id, cid, write))
        pins = self._pinned.setdefault(thread_id, {})
        pins[cid] = pins.get(cid, 0) + 1
        self._idle.clear()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="dialogue-writes")

    def _unpin(self, thread_id: str, cid: str) -> None:
        pins = self._pinned.get(thread_id, {})
        pins[cid] = pins.get(cid, 1) - 1
        if pins[cid] <= 0:
            pins.pop(cid, None)
        if not pins:
            self._pinned.pop(thread_id, None)

    async def _flush_loop(self) -> None:
        while self._pending:
            thread_id, cid, write = self._pending[0]
            try:
                await asyncio.wait_for(write(), self.write_timeout_s)
            except REMOTE_ERRORS as exc:
                if not self.degraded:
                    log.warning("Redis unreachable (%s): dialogue writes wait in memory", exc)
                    self.degraded = True
                await asyncio.sleep(self.retry_s)
                continue
            except Exception:  # a write Redis will never take: logged, and the queue goes on
                log.exception("session %s: a dialogue write failed and is dropped", thread_id)
                self.dropped += 1
            if self._pending and self._pending[0][2] is write:
                self._pending.popleft()
                self._unpin(thread_id, cid)
                if thread_id not in self._pinned:  # what only waited for Redis may go now
                    self.local.prune(thread_id, self.keep_checkpoints, set())
            if self.degraded and not self._pending:
                log.info("Redis is back: the waiting dialogue writes are written")
                self.degraded = False
        self._idle.set()

    def _touch(self, thread_id: str) -> None:
        self._hot[thread_id] = None
        self._hot.move_to_end(thread_id)
        while len(self._hot) > self.max_threads:
            victim = next((t for t in self._hot if t not in self._pinned and t != thread_id), None)
            if victim is None:
                break
            del self._hot[victim]
            self.local.delete_thread(victim)

    def release(self, thread_id: str) -> None:
        """Drop a closed session from memory once its writes are in Redis (another server may serve it
        next); with writes still queued it stays until evicted."""
        if thread_id not in self._pinned and thread_id in self._hot:
            del self._hot[thread_id]
            self.local.delete_thread(thread_id)
