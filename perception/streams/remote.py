"""The voice server's side of the queue: :class:`RemotePerceiver`, a :class:`~perception.base.Perceiver`
whose turns are perceived by ``emo-agent worker`` processes.

``EMO_PERCEPTION__MODE=redis-streams`` makes the agent build this instead of the models. Each call is one
job: the turn's audio (float32, exact) or text and the conversation's speaker baseline go onto the stream;
the call blocks (in the voice pipeline's worker thread, like in-process perception) on the job's result
list until a worker answers or ``job_timeout_s`` passes (:class:`PerceptionTimeout`). The answer carries
the baseline after the turn, which replaces the caller's, so the next turn of the conversation can be
served by any worker. A worker's ``audio`` error comes back as :class:`~perception.base.AudioError`, any
other as :class:`RemotePerceptionError`.

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    perceiver = RemotePerceiver(client, PerceptionQueueSettings())
    baseline = perceiver.new_baseline()
    perception = perceiver.perceive(audio, 16000, baseline)

Thread-safe: every call uses its own pooled connection while it waits.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np

from perception.base import SAMPLE_RATE, AudioError, Perceiver, SpeakerBaseline
from perception.config import PerceptionQueueSettings
from perception.streams.jobs import (
    ENQUEUE_SCRIPT,
    Job,
    JobResult,
    PerceptionTimeout,
    QueueKeys,
    RemotePerceptionError,
    new_job_id,
)
from perception.types import Perception

log = logging.getLogger(__name__)


class RemoteBaseline(SpeakerBaseline):
    """A conversation's speaker baseline as the workers left it: their perceiver's state (JSON), plus the
    conversation's id and how many turns it has had. Plain data, so it copies and travels."""

    def __init__(self, session: str | None = None) -> None:
        self.session = session or uuid.uuid4().hex
        self.turns = 0
        self.state: dict[str, Any] = {}  # empty: the workers start the conversation's baseline

    def reset(self) -> None:
        self.state = {}

    def to_state(self) -> dict[str, Any]:
        return self.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.state = state


class RemotePerceiver(Perceiver):
    """Perception by the workers serving ``settings.stream`` (see the module docstring)."""

    text_model = None

    def __init__(self, client, settings: PerceptionQueueSettings) -> None:  # client: redis.Redis
        self.client = client
        self.settings = settings
        self.keys = QueueKeys(settings.stream)
        # Until a worker answers, the name says where perceptions come from; then the workers' model.
        self.model_id = f"redis-streams:{settings.stream}"
        self._enqueue = client.register_script(ENQUEUE_SCRIPT)
        timeout_ms = int(settings.job_timeout_s * 1000)
        # Entries older than this are jobs nobody served; the next XADD trims them.
        self._retention_ms = 4 * timeout_ms + 60_000

    def new_baseline(self) -> RemoteBaseline:
        return RemoteBaseline()

    def warmup(self) -> None:
        """Nothing to load here; the workers warm their own models."""

    def perceive(
        self,
        audio: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        baseline: SpeakerBaseline | None = None,
    ) -> Perception:
        return self.perceive_with_cues(audio, sample_rate, baseline)[0]

    def perceive_with_cues(
        self,
        audio: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        baseline: SpeakerBaseline | None = None,
    ) -> tuple[Perception, dict[str, float]]:
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim not in (1, 2) or samples.size == 0:
            raise AudioError(f"expected mono or (samples, channels) audio, got shape {samples.shape}")
        job = self._job("audio", baseline, audio=samples, sample_rate=int(sample_rate))
        result = self.run(job)
        if baseline is not None and result.baseline is not None:
            if isinstance(baseline, RemoteBaseline):
                baseline.turns += 1
            baseline.load_state(result.baseline)
        assert result.perception is not None
        return result.perception, result.cues

    def perceive_text(self, text: str, baseline: SpeakerBaseline | None = None) -> Perception:
        context = baseline.recent_texts() if baseline is not None else []
        result = self.run(self._job("text", None, text=text, context=context))
        assert result.perception is not None
        if baseline is not None:
            baseline.remember_text(text)
        return result.perception

    # -- one job --------------------------------------------------------------------------------------
    def _job(self, kind: str, baseline: SpeakerBaseline | None, **payload: Any) -> Job:
        session, seq, state = "", 0, None
        if isinstance(baseline, RemoteBaseline):
            session, seq, state = baseline.session, baseline.turns + 1, baseline.state
        elif baseline is not None:  # a model's own baseline: it travels as its state
            state = baseline.to_state()
        timeout_ms = int(self.settings.job_timeout_s * 1000)
        return Job(new_job_id(), kind, timeout_ms, session, seq, baseline=state, **payload)  # type: ignore[arg-type]

    def submit(self, job: Job) -> str:
        """Put ``job`` on the stream; returns its entry id."""
        args: list[Any] = [self._retention_ms]
        for name, value in job.fields().items():
            args += [name, value]
        entry = self._enqueue(keys=[self.settings.stream], args=args)
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def wait(self, job: Job, started: float | None = None) -> JobResult:
        """Block until ``job``'s result is in (the time left of ``job_timeout_s`` since ``started``,
        a ``time.monotonic()`` reading); raises the result's error as its typed exception."""
        start = time.monotonic() if started is None else started
        deadline = start + job.timeout_ms / 1000
        done = self.keys.done(job.job_id)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PerceptionTimeout(
                    f"no perception worker answered within {job.timeout_ms / 1000:g} s "
                    f"(stream {self.settings.stream!r}, group {self.settings.group!r}; is `emo-agent worker` "
                    "running?)"
                )
            # BLPOP's timeout has a resolution of 1 ms; waits of up to a second keep the socket honest.
            popped = self.client.blpop([done], timeout=max(0.001, min(left, 1.0)))
            if popped is not None:
                break
        result = JobResult.from_json(popped[1])
        if result.perception is not None and result.perception.model:
            self.model_id = result.perception.model
        if result.error is not None:
            kind, message = result.error.get("kind", "failed"), result.error.get("message", "")
            if kind == "audio":
                raise AudioError(message)
            raise RemotePerceptionError(kind, f"worker {result.worker}: {message}")
        if result.perception is None:
            raise RemotePerceptionError("failed", f"worker {result.worker} sent no perception")
        return result

    def run(self, job: Job) -> JobResult:
        """Submit ``job`` and wait for its result."""
        started = time.monotonic()
        self.submit(job)
        return self.wait(job, started)

    def close(self) -> None:
        self.client.close()
