"""``emo-agent worker``: one perception worker process (docs/scaling.md).

Builds the configured perceiver once (``EMO_PERCEPTION__*``: estimator, ASR model, ``DEVICE``), joins the
consumer group of ``EMO_PERCEPTION_QUEUE__STREAM`` in the Redis at ``EMO_PERCEPTION_QUEUE__REDIS_URL``
(default ``EMO_REDIS_URL``) and serves turn jobs until SIGTERM or SIGINT, which end it after the job in
hand. Run one per GPU (``EMO_PERCEPTION__DEVICE=cuda:N``) or machine; they share the load. With
``EMO_PERCEPTION__CPU_THREADS=N`` the whole process (CTranslate2, torch, OpenMP/BLAS pools) keeps to N
threads, so several CPU workers can share a machine's cores.

    EMO_PERCEPTION__DEVICE=cuda:0 emo-agent worker --name gpu0
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

from agent.config import Settings
from perception.base import PerceptionError

log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """The worker cannot start: Redis unreachable, or the perceiver cannot be built."""


def queue_redis_url(settings: Settings) -> str:
    return settings.perception_queue.redis_url or settings.redis_url


# The thread pools of the numeric libraries, sized when they load: set before any of them is imported.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Hold this process to ``threads`` CPU threads (``EMO_PERCEPTION__CPU_THREADS`` > 0), so N workers on N
    cores do not each start a pool per core and fight over them. Variables already set are left alone."""
    if threads <= 0:
        return
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)


def run_worker(settings: Settings, name: str | None = None) -> int:
    """Serve jobs until a signal stops the worker; returns how many results it published."""
    limit_threads(settings.perception.cpu_threads)
    import redis

    from perception.registry import build_perceiver
    from perception.streams import PerceptionWorker

    queue = settings.perception_queue.model_copy(update={"consumer": name} if name else {})
    url = queue_redis_url(settings)
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except Exception as exc:
        raise WorkerStartError(f"cannot reach Redis at {url} ({exc})") from exc
    log.info("loading perception (%s on %s)", settings.perception.estimator, settings.perception.device)
    try:
        perceiver = build_perceiver(settings.perception)
    except (PerceptionError, FileNotFoundError, ImportError) as exc:
        raise WorkerStartError(str(exc)) from exc
    worker = PerceptionWorker(perceiver, client, queue)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker %s: %s, finishing the job in hand", worker.name, signal.Signals(signum).name)
        worker.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        client.close()
    return worker.served
