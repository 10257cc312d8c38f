"""Turn-taking and barge-in as a sans-I/O state machine: samples in, events out, no clock, no socket.

:class:`TurnDetector` buffers 16 kHz float32 samples into 512-sample chunks (32 ms), asks the injected VAD
(any ``chunk -> probability`` callable, so tests drive it deterministically) for a speech probability per
chunk, and returns events:

- :class:`SpeechStarted` once speech has lasted ``min_speech_ms`` (clicks and coughs never start a turn);
- :class:`BargeIn` once speech has lasted ``barge_in_ms`` while the assistant is marked speaking
  (:attr:`TurnDetector.assistant_speaking`), at most once per stretch of speech;
- :class:`SpeechPaused` (the turn's audio so far) once a turn has been silent for ``pause_ms``, shorter than
  ``min_silence_ms``: the turn may be over, so work on it can start speculatively. Then either
  :class:`SpeechResumed` when speech comes back before the turn ends (the speculative work must be dropped
  unheard), or the turn ends. At most one pause per stretch of silence; ``pause_ms`` 0 never pauses;
- :class:`SpeechStopped` then :class:`TurnEnded` (the turn's audio including ``pre_roll_ms`` of audio from
  before the detected start) after ``min_silence_ms`` of silence (reason ``"silence"``), at ``max_turn_s``
  (reason ``"max_length"``), or when :meth:`TurnDetector.flush` is called (reason ``"flush"``).
  :attr:`TurnEnded.paused` says whether a :class:`SpeechPaused` of this turn is still standing (no
  :class:`SpeechResumed` after it): only then may the speculative work stand for the ended turn.

A chunk is speech when its probability is ≥ ``threshold``; once speaking, it takes a probability below
``threshold - 0.15`` to count as silence (Silero's own hysteresis), so a wavering voice is not cut.
Times in events are seconds of audio since the detector was created.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from voice.config import VoiceSettings

SAMPLE_RATE = 16_000
CHUNK_SAMPLES = 512
HYSTERESIS = 0.15

TurnEndReason = Literal["silence", "max_length", "flush"]


@dataclass(frozen=True)
class TurnSettings:
    """The turn-taking knobs of :class:`agent.config.VoiceSettings` (see there for what each trades off)."""

    threshold: float = 0.5
    min_silence_ms: int = 500
    min_speech_ms: int = 200
    pre_roll_ms: int = 300
    max_turn_s: float = 30.0
    barge_in_ms: int = 300
    pause_ms: int = 0

    @classmethod
    def from_voice_settings(cls, voice: VoiceSettings) -> TurnSettings:
        return cls(
            threshold=voice.vad_threshold,
            min_silence_ms=voice.min_silence_ms,
            min_speech_ms=voice.min_speech_ms,
            pre_roll_ms=voice.pre_roll_ms,
            max_turn_s=voice.max_turn_s,
            barge_in_ms=voice.barge_in_ms,
            pause_ms=voice.speculative_pause_ms,
        )


@dataclass(frozen=True)
class SpeechStarted:
    t: float  # seconds of audio at the first speech chunk


@dataclass(frozen=True)
class SpeechStopped:
    t: float  # seconds of audio at the end of the turn


@dataclass(frozen=True)
class BargeIn:
    t: float  # seconds of audio when the user's speech reached barge_in_ms


@dataclass(frozen=True, eq=False)
class SpeechPaused:
    """The turn has been silent for ``pause_ms``; ``audio`` is the turn so far (as :class:`TurnEnded`'s)."""

    audio: np.ndarray
    t_start: float
    t_end: float  # seconds of audio at the pause


@dataclass(frozen=True)
class SpeechResumed:
    t: float  # seconds of audio when speech came back after a SpeechPaused


@dataclass(frozen=True, eq=False)
class TurnEnded:
    """A finished user turn. ``audio``: float32, shape ``(n,)``, 16 kHz, pre-roll included. ``paused``: a
    :class:`SpeechPaused` of this turn stands (speech did not resume after it)."""

    audio: np.ndarray
    reason: TurnEndReason
    t_start: float
    t_end: float
    paused: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


TurnEvent = SpeechStarted | SpeechStopped | BargeIn | SpeechPaused | SpeechResumed | TurnEnded


class _State(Enum):
    IDLE = "idle"  # no speech; keeping pre-roll
    PENDING = "pending"  # speech seen, not yet min_speech_ms of it
    SPEAKING = "speaking"  # a turn is in progress


def _chunks(ms: float) -> int:
    """Milliseconds → whole chunks (at least one when ms > 0)."""
    if ms <= 0:
        return 0
    return max(1, round(ms * SAMPLE_RATE / 1000 / CHUNK_SAMPLES))


class TurnDetector:
    """Sans-I/O turn-taking for one session. Not thread-safe; call from one task (or one thread) at a time."""

    def __init__(self, vad: Callable[[np.ndarray], float], settings: TurnSettings | None = None) -> None:
        self._vad = vad
        self.settings = settings or TurnSettings()
        s = self.settings
        self._min_speech = _chunks(s.min_speech_ms)
        self._min_silence = _chunks(s.min_silence_ms)
        self._barge_in = _chunks(s.barge_in_ms)
        # A pause only makes sense shorter than the silence that ends the turn.
        self._pause = _chunks(s.pause_ms) if _chunks(s.pause_ms) < self._min_silence else 0
        self._max_turn = max(1, int(s.max_turn_s * SAMPLE_RATE / CHUNK_SAMPLES))
        self._off_threshold = max(0.0, s.threshold - HYSTERESIS)
        #: Set by the session while a reply is being spoken; speech then raises :class:`BargeIn`.
        self.assistant_speaking = False
        self._pending_samples = np.zeros(0, dtype=np.float32)
        self._chunk_index = 0  # chunks processed so far
        self._pre_roll: deque[np.ndarray] = deque(maxlen=_chunks(s.pre_roll_ms) or 1)
        self._pre_roll_enabled = s.pre_roll_ms > 0
        self._reset_segment()

    def _reset_segment(self) -> None:
        self._state = _State.IDLE
        self._turn: list[np.ndarray] = []  # pre-roll + chunks since the first speech chunk
        self._turn_start_chunk = 0
        self._speech_chunks = 0  # speech chunks in this segment (for min_speech and barge-in)
        self._silence_run = 0
        self._barged_in = False
        self._paused = False  # a SpeechPaused stands (no speech since)

    @property
    def in_speech(self) -> bool:
        """A turn has started (SpeechStarted sent) and not yet ended."""
        return self._state is _State.SPEAKING

    def _t(self, chunk_index: int) -> float:
        return chunk_index * CHUNK_SAMPLES / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        """Take 16 kHz float32 samples (any length); return the events the completed chunks caused."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._pending_samples, samples]) if len(self._pending_samples) else samples
        n_full = len(buf) // CHUNK_SAMPLES
        events: list[TurnEvent] = []
        for i in range(n_full):
            chunk = buf[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES].copy()
            events.extend(self._on_chunk(chunk, float(self._vad(chunk))))
        self._pending_samples = buf[n_full * CHUNK_SAMPLES :].copy()
        return events

    def _on_chunk(self, chunk: np.ndarray, prob: float) -> list[TurnEvent]:
        index = self._chunk_index
        self._chunk_index += 1
        events: list[TurnEvent] = []
        is_speech = prob >= self.settings.threshold
        if self._state is _State.IDLE:
            if not is_speech:
                if self._pre_roll_enabled:
                    self._pre_roll.append(chunk)
                return events
            self._state = _State.PENDING
            self._turn = list(self._pre_roll) + [chunk]
            self._pre_roll.clear()
            self._turn_start_chunk = index
            self._speech_chunks = 1
        elif self._state is _State.PENDING:
            if prob < self._off_threshold:
                # Too short to be a turn: the segment becomes pre-roll again.
                kept = self._turn + [chunk]
                self._reset_segment()
                if self._pre_roll_enabled:
                    self._pre_roll.extend(kept)
                return events
            self._turn.append(chunk)
            self._speech_chunks += int(is_speech)
        else:  # SPEAKING
            self._turn.append(chunk)
            if prob < self._off_threshold:
                self._silence_run += 1
            else:
                self._silence_run = 0
                self._speech_chunks += int(is_speech)
                if self._paused:
                    self._paused = False
                    events.append(SpeechResumed(t=self._t(index)))

        if self._state is _State.PENDING and self._speech_chunks >= self._min_speech:
            self._state = _State.SPEAKING
            events.append(SpeechStarted(t=self._t(self._turn_start_chunk)))
        if (
            self.assistant_speaking
            and not self._barged_in
            and self._silence_run == 0
            and self._speech_chunks >= self._barge_in
        ):
            self._barged_in = True
            events.append(BargeIn(t=self._t(index + 1)))
        if self._state is _State.SPEAKING:
            if self._pause and self._silence_run == self._pause and not self._paused:
                self._paused = True
                audio = np.concatenate(self._turn)
                t_end = self._t(self._chunk_index)
                t_start = t_end - len(audio) / SAMPLE_RATE
                events.append(SpeechPaused(audio=audio, t_start=t_start, t_end=t_end))
            if self._silence_run >= self._min_silence:
                events.extend(self._end_turn("silence"))
            elif index + 1 - self._turn_start_chunk >= self._max_turn:
                events.extend(self._end_turn("max_length"))
        return events

    def _end_turn(self, reason: TurnEndReason) -> list[TurnEvent]:
        started = self._state is _State.SPEAKING
        audio = np.concatenate(self._turn) if self._turn else np.zeros(0, dtype=np.float32)
        t_end = self._t(self._chunk_index)
        if reason == "flush" and len(self._pending_samples):
            audio = np.concatenate([audio, self._pending_samples])
            t_end += len(self._pending_samples) / SAMPLE_RATE
        t_start = t_end - len(audio) / SAMPLE_RATE
        paused = self._paused
        self._reset_segment()
        events: list[TurnEvent] = [SpeechStopped(t=t_end)] if started else []
        events.append(TurnEnded(audio=audio, reason=reason, t_start=t_start, t_end=t_end, paused=paused))
        return events

    def flush(self) -> list[TurnEvent]:
        """End the turn now (push-to-talk release, end of a file).

        Returns ``[SpeechStopped, TurnEnded(reason="flush")]`` while speaking, ``[TurnEnded]`` when speech
        was seen but was shorter than ``min_speech_ms``, and ``[]`` when there was no speech since the last
        turn ended.
        """
        if self._state is _State.IDLE:
            self._pending_samples = np.zeros(0, dtype=np.float32)
            return []
        events = self._end_turn("flush")
        self._pending_samples = np.zeros(0, dtype=np.float32)
        self._pre_roll.clear()
        return events
