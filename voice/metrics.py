"""Per-turn latency metrics: the ``metrics`` event's content and the Prometheus metrics of ``GET /metrics``.

One :class:`VoiceMetrics` per server owns its own :class:`~prometheus_client.CollectorRegistry` (never the
global one, so several servers in one process keep separate counts). The server counts open connections
(:meth:`VoiceMetrics.connection`) and scrapes (:meth:`VoiceMetrics.render`); each session counts the
``error`` events it sends (:meth:`VoiceMetrics.error`); the turn pipeline reports every turn once, when it
ends (:meth:`VoiceMetrics.observe_turn`).

Metrics (all times in seconds, as Prometheus expects; the ``metrics`` event carries the same numbers in ms):

- ``emo_turn_stage_seconds{stage}`` (histogram): each stage of :attr:`voice.pipeline.Turn.latency_ms` —
  ``perception``, ``llm_first_token``, ``first_sentence``, ``first_audio_byte``, ``reply_text``, ``total``
  (time from the end of the user's turn until that point), the dialogue engine's own ``dialogue_*`` timings
  and the perceiver's ``perception_*`` sub-stages (``perception_asr``, ``perception_acoustics``, ...;
  durations);
- ``emo_turn_end_to_end_seconds`` (histogram): end of the user's turn → first reply audio sent (the first
  reply text when TTS is off), what the user waits for;
- ``emo_active_sessions`` (gauge): open ``/ws`` connections;
- ``emo_turns_total{outcome}`` (counter): turns that ended ``done``, ``interrupted`` or ``failed``;
- ``emo_errors_total{code}`` (counter): ``error`` events sent, by :class:`voice.protocol.ErrorCode`;
- ``emo_speculative_turns_total{outcome}`` (counter): turns begun at a pause that were ``confirmed`` (the
  user's turn had ended) or ``discarded`` (the user went on speaking).

A stage reached before the turn ended (a speculative turn's perception, say) has a negative latency in the
``metrics`` event; the histograms observe it as 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

TurnOutcome = Literal["done", "interrupted", "failed"]
OUTCOMES: tuple[TurnOutcome, ...] = ("done", "interrupted", "failed")

# Stage latencies of a live voice loop lie between ~50 ms and a few seconds; ``total`` includes the reply's
# playback, hence the two wide buckets at the top.
STAGE_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
END_TO_END_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0)

# Stage names become label values: only short snake_case names, at most this many distinct ones, so an
# engine reporting odd timings cannot blow up the number of series.
_STAGE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_STAGES = 64


def turn_stages(
    latency_ms: Mapping[str, float], perception_ms: Mapping[str, float] | None
) -> dict[str, float]:
    """Every stage of a turn in ms: the turn's own marks and timings, then the perceiver's sub-stages as
    ``perception_<name>``."""
    stages = {name: float(ms) for name, ms in latency_ms.items()}
    for name, ms in (perception_ms or {}).items():
        stages.setdefault(f"perception_{name}", float(ms))
    return stages


class VoiceMetrics:
    """The Prometheus metrics of one voice server, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "emo_turn_stage_seconds",
            "Latency of each stage of a turn: time from the end of the user's turn to a point of the reply "
            "(perception, llm_first_token, first_sentence, first_audio_byte, reply_text, total), or the "
            "duration of a dialogue_* or perception_* sub-stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "emo_turn_end_to_end_seconds",
            "End of the user's turn to the first reply audio sent (first reply text when TTS is off).",
            buckets=END_TO_END_BUCKETS,
            registry=r,
        )
        self.active_sessions = Gauge("emo_active_sessions", "Open /ws connections.", registry=r)
        self.turns = Counter("emo_turns", "Turns ended, by outcome.", ["outcome"], registry=r)
        self.errors = Counter("emo_errors", "error events sent to clients, by code.", ["code"], registry=r)
        self.speculative = Counter(
            "emo_speculative_turns",
            "Turns begun at a pause, by whether the end of the user's turn confirmed them.",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:  # present (at 0) from the first scrape, so rate() sees every series
            self.turns.labels(outcome=outcome)
        for outcome in ("confirmed", "discarded"):
            self.speculative.labels(outcome=outcome)
        self._stages: set[str] = set()

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Count one open connection for the duration of the ``with`` block."""
        self.active_sessions.inc()
        try:
            yield
        finally:
            self.active_sessions.dec()

    def error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def speculation(self, outcome: Literal["confirmed", "discarded"]) -> None:
        self.speculative.labels(outcome=outcome).inc()

    def observe_turn(
        self, outcome: TurnOutcome, stages_ms: Mapping[str, float], end_to_end_ms: float | None
    ) -> None:
        """Count one ended turn and observe each of its stages (:func:`turn_stages`) that was reached."""
        self.turns.labels(outcome=outcome).inc()
        for stage, ms in stages_ms.items():
            if not _STAGE_RE.match(stage):
                continue
            if stage not in self._stages:
                if len(self._stages) >= MAX_STAGES:
                    continue
                self._stages.add(stage)
            self.stage_seconds.labels(stage=stage).observe(max(ms, 0.0) / 1000)
        if end_to_end_ms is not None:
            self.end_to_end_seconds.observe(max(end_to_end_ms, 0.0) / 1000)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type: the Prometheus text format, or OpenMetrics when the
        ``Accept`` header asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
