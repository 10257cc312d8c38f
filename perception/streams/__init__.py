"""Perception as a service on Redis Streams: voice servers put turns on a stream, workers perceive them.

* :mod:`perception.streams.jobs`: the job and result formats, the keys, the typed errors;
* :mod:`perception.streams.remote`: :class:`RemotePerceiver`, the :class:`~perception.base.Perceiver` a
  voice server uses with ``EMO_PERCEPTION__MODE=redis-streams``;
* :mod:`perception.streams.worker`: :class:`PerceptionWorker`, the loop ``emo-agent worker`` runs.

The design (delivery, reclaim, ordering, failure modes, running N workers) is in docs/scaling.md.
"""

from perception.streams.jobs import PerceptionTimeout, RemotePerceptionError
from perception.streams.remote import RemoteBaseline, RemotePerceiver
from perception.streams.worker import PerceptionWorker

__all__ = [
    "PerceptionTimeout",
    "PerceptionWorker",
    "RemoteBaseline",
    "RemotePerceiver",
    "RemotePerceptionError",
]
