"""Where the voice server's perceptions come from: ``EMO_PERCEPTION__MODE``.

``in-process`` (the default) loads the configured models into the server; ``redis-streams`` sends each
turn to the ``emo-agent worker`` processes serving the queue (:class:`perception.streams.RemotePerceiver`,
docs/scaling.md) and loads no perception model here.
"""

from __future__ import annotations

import logging

from agent.config import Settings
from perception.base import Perceiver
from perception.registry import build_perceiver
from perception.streams import RemotePerceiver

log = logging.getLogger(__name__)


class QueueUnavailable(RuntimeError):
    """The perception queue's Redis cannot be reached."""


def build_perception(settings: Settings) -> Perceiver:
    """The perceiver ``settings.perception.mode`` asks for."""
    if settings.perception.mode != "redis-streams":
        log.info("loading perception (%s)", settings.perception.estimator)
        return build_perceiver(settings.perception)
    import redis

    queue = settings.perception_queue
    url = queue.redis_url or settings.redis_url
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        groups = client.xinfo_groups(queue.stream) if client.exists(queue.stream) else []
    except Exception as exc:
        client.close()
        raise QueueUnavailable(f"cannot reach the perception queue's Redis at {url} ({exc})") from exc
    consumers = sum(int(g["consumers"]) for g in groups if g["name"].decode() == queue.group)
    log.info(
        "perception by workers on %s (group %s, %d consumers known); a turn waits up to %g s",
        queue.stream,
        queue.group,
        consumers,
        queue.job_timeout_s,
    )
    if not consumers:
        log.warning("no perception worker has joined %s yet: start `emo-agent worker`", queue.stream)
    return RemotePerceiver(client, queue)


def close_perception(perceiver: Perceiver) -> None:
    """Release what :func:`build_perception` opened (the queue's connections)."""
    if isinstance(perceiver, RemotePerceiver):
        perceiver.close()
