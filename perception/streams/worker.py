"""A perception worker: takes turn jobs from a Redis Streams consumer group, perceives them with a local
perceiver and publishes each result once. ``emo-agent worker`` runs one per process (one per GPU).

Each round of :meth:`PerceptionWorker.run`:

1. ``XAUTOCLAIM`` one job that has been pending longer than ``reclaim_idle_s`` (its worker died or
   hangs); a claimed job is served first, as its turn has waited longest. A job handed out
   ``max_deliveries`` times gets an ``undeliverable`` error instead: it may be what kills the workers.
2. Otherwise ``XREADGROUP ... >`` waits up to ``block_ms`` for one new job.
3. The job is dropped (acknowledged, unanswered) if its result already exists (a duplicate delivery) or
   its caller has stopped waiting (older than its ``timeout_ms`` by the Redis server's clock).
4. While the turn is perceived, a heartbeat thread re-claims the job for this worker every
   ``reclaim_idle_s / 4`` (``XCLAIM ... JUSTID`` resets its idle time), so a live worker's slow turn is
   never taken over; only a dead (or frozen) process's is.
5. The result (perception, cue z-scores and the baseline after the turn, or the error) is published once
   per job (:data:`~perception.streams.jobs.PUBLISH_SCRIPT`), then the entry is ``XACK``-ed and deleted.

Delivery is at least once: a worker killed after publishing but before acknowledging has its job served
again, and the second result is discarded by the ``SET NX``. :meth:`stop` (``SIGTERM``) ends the loop after
the job in hand; the consumer leaves the group if it holds no pending job. While Redis cannot be reached
the worker tries again every second, and it rejoins a group that has disappeared (a Redis restarted empty).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from perception.base import AudioError, Perceiver, PerceptionError
from perception.config import PerceptionQueueSettings
from perception.streams.jobs import PUBLISH_SCRIPT, Job, JobResult, QueueKeys, entry_ms

log = logging.getLogger(__name__)


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class PerceptionWorker:
    """Serves ``settings.stream`` / ``settings.group`` with ``perceiver`` (see the module docstring)."""

    def __init__(self, perceiver: Perceiver, client, settings: PerceptionQueueSettings) -> None:
        self.perceiver = perceiver
        self.client = client  # redis.Redis (sync)
        self.settings = settings
        self.name = settings.consumer or default_consumer_name()
        self.keys = QueueKeys(settings.stream)
        self._publish = client.register_script(PUBLISH_SCRIPT)
        self._stop = threading.Event()
        self._current: bytes | None = None  # the entry being perceived, renewed by the heartbeat
        self._current_lock = threading.Lock()
        self._reclaim_cursor: bytes | str = "0-0"
        self.served = 0  # results this worker published
        self._warned_models: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (from the stream's start, so jobs queued
        before the first worker came up are served)."""
        try:
            self.client.xgroup_create(self.settings.stream, self.settings.group, id="0", mkstream=True)
        except Exception as exc:  # redis.ResponseError BUSYGROUP: another worker made it
            if "BUSYGROUP" not in str(exc):
                raise

    def join_group(self) -> None:
        """The group (:meth:`ensure_group`) and this worker in it, visible to ``XINFO CONSUMERS`` from now on
        (reads that return nothing do not create a consumer)."""
        self.ensure_group()
        self.client.xgroup_createconsumer(self.settings.stream, self.settings.group, self.name)
        self._reclaim_cursor = "0-0"

    def stop(self) -> None:
        """End :meth:`run` after the job in hand (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Serve jobs until :meth:`stop`."""
        self.join_group()
        heartbeat = threading.Thread(target=self._heartbeat, name=f"{self.name}-heartbeat", daemon=True)
        heartbeat.start()
        log.info(
            "worker %s serving %s (group %s) with %s",
            self.name,
            self.settings.stream,
            self.settings.group,
            self.perceiver.model_id,
        )
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except (RedisConnectionError, RedisTimeoutError) as exc:  # Redis restarting, network
                    log.warning("worker %s: Redis unreachable (%s); trying again in 1 s", self.name, exc)
                    self._stop.wait(1.0)
                except ResponseError as exc:
                    # NOGROUP: read after the stream went; UNBLOCKED: the stream went during a blocking read
                    if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                        raise
                    log.warning(
                        "worker %s: the stream or its group is gone (Redis restarted?); rejoining", self.name
                    )
                    self.join_group()
        finally:
            self._stop.set()
            heartbeat.join(timeout=5)
            self._leave_group()
            log.info("worker %s stopped after %d results", self.name, self.served)

    def step(self) -> int:
        """One round: a reclaimed job, else a new one (waiting up to ``block_ms``). Returns jobs handled."""
        claimed = self._reclaim_one()
        if claimed is not None:
            entry_id, fields = claimed
            self.handle(entry_id, fields, reclaimed=True)
            return 1
        found = self.client.xreadgroup(
            self.settings.group,
            self.name,
            {self.settings.stream: ">"},
            count=1,
            block=self.settings.block_ms,
        )
        handled = 0
        for _stream, entries in found or []:
            for entry_id, fields in entries:
                self.handle(entry_id, fields, reclaimed=False)
                handled += 1
        return handled

    # -- one job --------------------------------------------------------------------------------------
    def handle(self, entry_id: bytes, fields: dict[bytes, bytes] | None, *, reclaimed: bool) -> None:
        """Serve one delivered entry, then acknowledge and delete it."""
        try:
            self._serve(entry_id, fields, reclaimed)
        finally:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.settings.stream, self.settings.group, entry_id)
            pipe.xdel(self.settings.stream, entry_id)
            pipe.execute()

    def _serve(self, entry_id: bytes, fields: dict[bytes, bytes] | None, reclaimed: bool) -> None:
        if not fields:  # trimmed from the stream while it was pending
            return
        try:
            job = Job.from_fields(fields)
        except (KeyError, ValueError) as exc:
            log.warning("dropping stream entry %s: not a job (%s)", entry_id, exc)
            return
        if self.client.exists(self.keys.result(job.job_id)):
            log.info("job %s already answered; duplicate delivery dropped", job.job_id)
            return
        seconds, micros = self.client.time()
        queued_ms = seconds * 1000 + micros / 1000 - entry_ms(entry_id)
        if queued_ms > job.timeout_ms:
            log.warning(
                "job %s dropped: queued %.0f ms, its caller waited %d ms",
                job.job_id,
                queued_ms,
                job.timeout_ms,
            )
            return
        result = JobResult(job.job_id, self.name, job.session, job.seq, queued_ms=round(queued_ms, 1))
        if reclaimed:
            result.deliveries = self._deliveries(entry_id)
            if result.deliveries > self.settings.max_deliveries:
                result.error = {
                    "kind": "undeliverable",
                    "message": f"job handed out {result.deliveries} times; its workers stopped each time",
                }
                self._publish_result(result)
                return
        with self._current_lock:
            self._current = entry_id
        start = time.perf_counter()
        try:
            self._perceive(job, result)
        finally:
            with self._current_lock:
                self._current = None
        result.perceive_ms = round((time.perf_counter() - start) * 1000, 1)
        self._publish_result(result)

    def _perceive(self, job: Job, result: JobResult) -> None:
        """Fill ``result`` with the perception (and the baseline after it) or the error."""
        try:
            if job.kind == "text":
                conversation = None
                if job.context:  # the earlier turns' words, read before this one's
                    conversation = self.perceiver.new_baseline()
                    for earlier in job.context:
                        conversation.remember_text(earlier)
                result.perception = self.perceiver.perceive_text(job.text, conversation)
                return
            baseline = self._baseline(job.baseline)
            assert job.audio is not None
            result.perception, result.cues = self.perceiver.perceive_with_cues(
                job.audio, job.sample_rate, baseline
            )
            if baseline is not None:
                result.baseline = {**baseline.to_state(), "model": self.perceiver.model_id}
        except AudioError as exc:
            result.error = {"kind": "audio", "message": str(exc)}
        except PerceptionError as exc:
            result.error = {"kind": "perception", "message": str(exc)}
        except Exception as exc:  # a bug or a broken model: the caller's turn fails, the worker goes on
            log.exception("job %s failed", job.job_id)
            result.error = {"kind": "failed", "message": f"{type(exc).__name__}: {exc}"}

    def _baseline(self, state: dict[str, Any] | None):
        """The perceiver's baseline continuing ``state``: fresh for ``{}``, none for ``None``. A state a
        different model wrote is not this model's to continue: the conversation's baseline starts over."""
        if state is None:
            return None
        baseline = self.perceiver.new_baseline()
        if not state:
            return baseline
        model = state.get("model")
        if model is not None and model != self.perceiver.model_id:
            if model not in self._warned_models:
                self._warned_models.add(model)
                log.warning(
                    "baseline written by %s, this worker runs %s: started afresh (run one model per group)",
                    model,
                    self.perceiver.model_id,
                )
            return baseline
        baseline.load_state(state)
        return baseline

    def _publish_result(self, result: JobResult) -> None:
        keys = [self.keys.result(result.job_id), self.keys.done(result.job_id)]
        written = self._publish(keys=keys, args=[result.to_json(), self.settings.result_ttl_s])
        if written:
            self.served += 1
        else:
            log.info("job %s: another worker's result came first; this one dropped", result.job_id)

    # -- reclaiming -----------------------------------------------------------------------------------
    def _reclaim_one(self) -> tuple[bytes, dict[bytes, bytes] | None] | None:
        """Claim the oldest job idle longer than ``reclaim_idle_s``, if any (cursor kept across rounds)."""
        reply = self.client.xautoclaim(
            self.settings.stream,
            self.settings.group,
            self.name,
            min_idle_time=int(self.settings.reclaim_idle_s * 1000),
            start_id=self._reclaim_cursor,
            count=1,
        )
        cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:  # trimmed entries Redis has just removed from the pending list
            log.info("%d pending jobs had been trimmed from the stream", len(deleted))
        self._reclaim_cursor = cursor
        if not claimed:
            return None
        entry_id, fields = claimed[0]
        log.warning("job entry %s reclaimed by %s (its worker stopped answering)", entry_id, self.name)
        return entry_id, fields

    def _deliveries(self, entry_id: bytes) -> int:
        pending = self.client.xpending_range(
            self.settings.stream, self.settings.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    def _heartbeat(self) -> None:
        """Keep the job in hand from looking idle: re-claim it every ``reclaim_idle_s / 4``."""
        period = max(0.05, self.settings.reclaim_idle_s / 4)
        while True:
            stopping = self._stop.wait(period)
            with self._current_lock:
                entry_id = self._current
            if entry_id is None:
                if stopping:
                    return
                continue
            try:
                self.client.xclaim(
                    self.settings.stream, self.settings.group, self.name, 0, [entry_id], justid=True
                )
            except Exception:  # Redis unreachable for a moment: the next beat tries again
                log.debug("heartbeat for %s failed", entry_id, exc_info=True)
            if stopping:  # the last job is still being perceived: keep beating at the same pace
                time.sleep(period)

    def _leave_group(self) -> None:
        """Remove this consumer from the group when it holds no pending job (one that it holds stays, for
        another worker to reclaim)."""
        try:
            summary = self.client.xpending_range(
                self.settings.stream, self.settings.group, min="-", max="+", count=1, consumername=self.name
            )
            if not summary:
                self.client.xgroup_delconsumer(self.settings.stream, self.settings.group, self.name)
        except Exception:
            log.debug("could not leave the consumer group", exc_info=True)
