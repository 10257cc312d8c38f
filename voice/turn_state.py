"""The state of one turn as the voice loop carries it: the user's side (:class:`Turn`) and the reply's
(:class:`Reply`), read and written by the session and the turn pipeline (:mod:`voice.pipeline`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dialogue.events import Prosody
from perception.base import SpeakerBaseline
from perception.types import Perception
from voice.metrics import TurnOutcome
from voice.playback import Playback


@dataclass
class Reply:
    """The reply part of a turn, as far as it got. Read by the session when it interrupts the turn."""

    t_start_wall: float
    first_output_wall: float | None = None  # epoch time of the first audio frame (or text, without TTS)
    policy: str = ""
    prosody: Prosody | None = None
    text: str = ""  # streamed text so far (assistant.delta)
    final_text: str | None = None
    playback: Playback = field(default_factory=Playback)

    @property
    def begun(self) -> bool:
        """Something of the reply (text or audio) has reached the client."""
        return bool(self.text) or self.playback.sent_s > 0

    def heard_text(self, now: float, speaking: bool) -> str:
        """What the user has heard by ``now`` (monotonic). Without TTS (``speaking`` False) the user has read
        the streamed text."""
        if not speaking:
            return self.text.strip()
        return self.playback.heard_text(now)


@dataclass
class Turn:
    turn_id: str
    t_start_wall: float  # epoch seconds the user's turn began
    t_end_wall: float  # epoch seconds the turn ended (VAD end, flush, typed text received)
    t_end_mono: float
    audio: np.ndarray | None = None
    text: str | None = None
    perception: Perception | None = None
    reply: Reply | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    finished: bool = False  # assistant.done sent; only the trajectory record may still be being written
    cancelled: bool = False  # dropped by the session: its perception must not touch the speaker baseline
    closing: asyncio.Task[None] | None = None  # the session's interruption of this turn, once begun
    outcome: TurnOutcome | None = None  # set once the turn has ended and been reported (metrics)
    # Speculative turns: what the client would have been sent, held in order until confirmation.
    held: list[Callable[[], None]] | None = None
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    marked: set[str] = field(default_factory=set)  # latency_ms keys measured from the end of the turn
    baseline_before: SpeakerBaseline | None = None  # the baseline this turn's perception replaced
    baseline_after: SpeakerBaseline | None = None

    def __post_init__(self) -> None:
        if self.held is None:
            self.confirmed.set()

    @classmethod
    def typed(cls, text: str) -> Turn:
        """A typed turn, received now: it starts and ends at once."""
        now = time.time()
        return cls(new_turn_id(), now, now, time.monotonic(), text=text)

    @classmethod
    def spoken(cls, audio: np.ndarray, t_start_wall: float, t_end_wall: float) -> Turn:
        """A spoken turn (16 kHz audio) that has just ended."""
        return cls(new_turn_id(), t_start_wall, t_end_wall, time.monotonic(), audio=audio)

    @classmethod
    def speculative(cls, audio: np.ndarray, t_start_wall: float, t_end_wall: float) -> Turn:
        """A spoken turn that may have ended (a pause): worked on now, sent only once confirmed."""
        return cls(new_turn_id(), t_start_wall, t_end_wall, time.monotonic(), audio=audio, held=[])

    @property
    def pending(self) -> bool:
        """A speculative turn not (yet) confirmed."""
        return not self.confirmed.is_set()

    def mark(self, stage: str) -> None:
        """Record the latency of ``stage`` (ms since the turn ended), first occurrence only. Before a
        speculative turn is confirmed it counts from the pause; confirmation re-bases it (negative: done
        before the turn ended)."""
        if stage not in self.latency_ms:
            self.marked.add(stage)
            self.latency_ms[stage] = round((time.monotonic() - self.t_end_mono) * 1000, 1)


def new_turn_id() -> str:
    return uuid.uuid4().hex[:16]
