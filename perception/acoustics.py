"""Measured acoustic cues of one turn and the per-conversation speaker baseline they are judged against.

Owns:

* :class:`AcousticAnalyzer`: openSMILE eGeMAPSv02 functionals (88 values; also the estimator's input)
  plus a cheap energy-based pause analysis, turned into the named cues of :data:`CUES`.
* :class:`CorpusNorms`: mean/std of every cue over the training corpus (shipped in the estimator's asset
  file), the reference for a speaker the product has not heard yet.
* :class:`RunningBaseline`: Welford mean/variance per cue for one conversation; seeded by the corpus
  norms until it has seen a few turns, then shrinking towards the speaker's own statistics.
* :func:`zscores`: each cue of a turn as a z-score against a baseline.

Cue table (``value`` in evidence is always the z-score):

================== ====================================== ==========================================
cue                measured as                            claims (z >= +1 / z <= -1)
================== ====================================== ==========================================
pitch_mean         F0 mean, semitones from 27.5 Hz        raised pitch / lowered pitch
pitch_variability  F0 20-80th percentile range, semitones  more varied pitch / flatter pitch
loudness_mean      loudness (sone-like) mean              louder voice / quieter voice
loudness_variability loudness coefficient of variation    more uneven loudness / steadier loudness
speaking_rate      loudness peaks per second              faster speech / slower speech
words_per_second   transcript words per second of speech  more words per second / fewer words per second
pause_share        share of the speech span in pauses     more pausing / fewer pauses
pause_rate         pauses (>= 150 ms) per second          more frequent pauses / fewer pauses per second
jitter             local jitter mean                      more jitter / less jitter
shimmer            local shimmer mean, dB                 more shimmer / less shimmer
hnr                harmonics-to-noise ratio mean, dB      clearer voice / rougher or breathier voice
================== ====================================== ==========================================
"""

from __future__ import annotations

import math
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from perception.base import SAMPLE_RATE, SpeakerBaseline

# A cue is cited in reasoning (and a claim about it verifies) only when |z| reaches this.
CLAIM_Z = 1.0


@dataclass(frozen=True)
class CueSpec:
    name: str
    description: str
    high_claim: str
    low_claim: str
    arousal_sign: int = 0  # +1: higher values go with higher arousal (used to nudge the arousal estimate)


CUES: dict[str, CueSpec] = {
    c.name: c
    for c in (
        CueSpec("pitch_mean", "mean pitch", "raised pitch", "lowered pitch", +1),
        CueSpec("pitch_variability", "pitch range", "more varied pitch", "flatter pitch", +1),
        CueSpec("loudness_mean", "mean loudness", "louder voice", "quieter voice", +1),
        CueSpec("loudness_variability", "loudness variation", "more uneven loudness", "steadier loudness", 0),
        CueSpec("speaking_rate", "loudness peaks per second", "faster speech", "slower speech", +1),
        CueSpec(
            "words_per_second", "words per second", "more words per second", "fewer words per second", +1
        ),
        CueSpec("pause_share", "share of pauses", "more pausing", "fewer pauses", -1),
        CueSpec("pause_rate", "pauses per second", "more frequent pauses", "fewer pauses per second", 0),
        CueSpec("jitter", "pitch-period jitter", "more jitter", "less jitter", 0),
        CueSpec("shimmer", "amplitude shimmer", "more shimmer", "less shimmer", 0),
        CueSpec("hnr", "harmonics-to-noise ratio", "clearer voice", "rougher or breathier voice", 0),
    )
}

# eGeMAPSv02 functional behind each functional-derived cue.
_FUNCTIONAL_CUES = {
    "pitch_mean": "F0semitoneFrom27.5Hz_sma3nz_amean",
    "pitch_variability": "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "loudness_mean": "loudness_sma3_amean",
    "loudness_variability": "loudness_sma3_stddevNorm",
    "speaking_rate": "loudnessPeaksPerSec",
    "jitter": "jitterLocal_sma3nz_amean",
    "shimmer": "shimmerLocaldB_sma3nz_amean",
    "hnr": "HNRdBACF_sma3nz_amean",
}

_WORD = re.compile(r"[A-Za-z0-9']+")


@dataclass
class PauseStats:
    speech_span_s: float  # first to last non-silent frame
    pause_share: float
    pause_rate: float  # pauses per second of speech span
    n_pauses: int


def pause_stats(audio: np.ndarray, min_pause_s: float = 0.15) -> PauseStats:
    """Energy-based pauses: 25 ms frames every 10 ms, silent when 30 dB below the loud (95th pct) level."""
    hop, win = SAMPLE_RATE // 100, SAMPLE_RATE // 40
    n = max(1, 1 + (len(audio) - win) // hop)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    frames = np.asarray(audio, dtype=np.float32)[np.minimum(idx, len(audio) - 1)]
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    voiced = db > max(np.percentile(db, 95) - 30.0, -75.0)
    if not voiced.any():
        return PauseStats(0.0, 1.0, 0.0, 0)
    first, last = np.flatnonzero(voiced)[[0, -1]]
    inner = voiced[first : last + 1]
    span_s = len(inner) / 100.0
    # run lengths of silence inside the speech span
    paused, n_pauses, run = 0, 0, 0
    for v in np.append(inner, True):
        if not v:
            run += 1
            continue
        if run / 100.0 >= min_pause_s:
            paused += run
            n_pauses += 1
        run = 0
    return PauseStats(span_s, paused / max(1, len(inner)), n_pauses / max(span_s, 1e-3), n_pauses)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def cues_from_measurements(
    functionals: dict[str, float], pauses: PauseStats, transcript: str | None = None
) -> dict[str, float]:
    """Named raw cue values (see :data:`CUES`). ``words_per_second`` only when a transcript is given."""
    cues = {name: float(functionals[col]) for name, col in _FUNCTIONAL_CUES.items()}
    cues["pause_share"] = pauses.pause_share
    cues["pause_rate"] = pauses.pause_rate
    if transcript is not None and transcript.strip() and pauses.speech_span_s > 0:
        cues["words_per_second"] = count_words(transcript) / max(pauses.speech_span_s, 0.3)
    return {k: v for k, v in cues.items() if math.isfinite(v)}


@dataclass
class AcousticMeasurement:
    functionals: np.ndarray  # (88,) eGeMAPSv02 functionals, in openSMILE's column order
    functional_names: list[str]
    pauses: PauseStats

    def cues(self, transcript: str | None = None) -> dict[str, float]:
        named = dict(zip(self.functional_names, self.functionals.tolist(), strict=True))
        return cues_from_measurements(named, self.pauses, transcript)


class AcousticAnalyzer:
    """openSMILE eGeMAPSv02 functionals + pause analysis. Thread-safe."""

    def __init__(self) -> None:
        import opensmile

        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.functional_names: list[str] = list(self._smile.feature_names)
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acoustics")

    def measure(self, audio: np.ndarray) -> AcousticMeasurement:
        audio = np.asarray(audio, dtype=np.float32)
        with self._lock:
            values = self._smile.process_signal(audio, SAMPLE_RATE).to_numpy(dtype=np.float32)[0]
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        return AcousticMeasurement(values, self.functional_names, pause_stats(audio))

    def submit(self, audio: np.ndarray) -> Future[tuple[AcousticMeasurement, float]]:
        """:meth:`measure` on the analyzer's worker thread, so the caller can run ASR meanwhile (openSMILE
        releases the GIL: on two cores the turn costs about the longer of the two, not their sum). The
        future gives the measurement and the milliseconds it took."""
        return self._worker.submit(self._timed_measure, audio)

    def _timed_measure(self, audio: np.ndarray) -> tuple[AcousticMeasurement, float]:
        start = time.perf_counter()
        measurement = self.measure(audio)
        return measurement, round((time.perf_counter() - start) * 1000, 1)


@dataclass
class CorpusNorms:
    """Mean and standard deviation of each cue over the training corpus."""

    mean: dict[str, float]
    std: dict[str, float]

    @classmethod
    def from_samples(cls, samples: list[dict[str, float]]) -> CorpusNorms:
        names = sorted({k for s in samples for k in s})
        mean, std = {}, {}
        for name in names:
            values = np.array([s[name] for s in samples if name in s], dtype=np.float64)
            mean[name] = float(values.mean())
            std[name] = float(values.std()) or 1.0
        return cls(mean, std)

    def to_json(self) -> dict[str, dict[str, float]]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, float]]) -> CorpusNorms:
        return cls(
            {k: float(v) for k, v in data["mean"].items()}, {k: float(v) for k, v in data["std"].items()}
        )


@dataclass
class _Welford:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def var(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


@dataclass
class RunningBaseline(SpeakerBaseline):
    """One speaker's cue statistics within a conversation (Welford mean/variance per cue).

    Reference for a cue: the corpus norms while fewer than ``min_turns`` turns were seen; after that
    the speaker's own mean, and a variance blended as ``w * own + (1 - w) * corpus`` with
    ``w = n / (n + prior_turns)`` (a variance from a handful of turns is too noisy to use alone), so
    the spread moves towards the speaker's own as the conversation goes on. The standard deviation
    never drops below ``std_floor`` times the corpus one (a few similar turns would otherwise turn tiny
    differences into large z-scores).
    """

    norms: CorpusNorms
    min_turns: int = 3
    prior_turns: float = 5.0
    std_floor: float = 0.35
    _stats: dict[str, _Welford] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_turns(self) -> int:
        return max((s.n for s in self._stats.values()), default=0)

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()
        self.forget_texts()

    def to_state(self) -> dict:
        """``{"kind": "running", "stats": {cue: [n, mean, m2]}, ...}``; JSON keeps floats exact."""
        with self._lock:
            stats = {name: [s.n, s.mean, s.m2] for name, s in self._stats.items()}
        return {
            "kind": "running",
            "min_turns": self.min_turns,
            "prior_turns": self.prior_turns,
            "std_floor": self.std_floor,
            "stats": stats,
            "texts": self.recent_texts(),
        }

    def load_state(self, state: dict) -> None:
        stats = {
            name: _Welford(int(n), float(mean), float(m2)) for name, (n, mean, m2) in state["stats"].items()
        }
        with self._lock:
            self.min_turns = int(state.get("min_turns", self.min_turns))
            self.prior_turns = float(state.get("prior_turns", self.prior_turns))
            self.std_floor = float(state.get("std_floor", self.std_floor))
            self._stats = stats
        self.forget_texts()
        for text in state.get("texts", []):
            self.remember_text(str(text))

    def update(self, cues: dict[str, float]) -> None:
        with self._lock:
            for name, value in cues.items():
                if math.isfinite(value):
                    self._stats.setdefault(name, _Welford()).add(float(value))

    def reference(self, cue: str) -> tuple[float, float] | None:
        """``(mean, std)`` the cue is compared with; ``None`` when nothing is known about it."""
        corpus_mean, corpus_std = self.norms.mean.get(cue), self.norms.std.get(cue)
        with self._lock:
            own = self._stats.get(cue)
            n, own_mean, own_var = (own.n, own.mean, own.var) if own else (0, 0.0, 0.0)
        if corpus_mean is None or corpus_std is None:
            if n < max(2, self.min_turns):
                return None
            return own_mean, max(math.sqrt(own_var), 1e-6)
        if n < self.min_turns:
            return corpus_mean, corpus_std
        w = n / (n + self.prior_turns)
        var = w * own_var + (1 - w) * corpus_std**2
        return own_mean, max(math.sqrt(var), self.std_floor * corpus_std)

    def zscores(self, cues: dict[str, float]) -> dict[str, float]:
        return zscores(cues, self)


def zscores(cues: dict[str, float], baseline: RunningBaseline) -> dict[str, float]:
    """Each cue as ``(value - reference mean) / reference std``, rounded to 2 decimals and clipped to
    [-6, 6]; cues without a reference are left out (nothing to compare them with)."""
    out = {}
    for name, value in cues.items():
        ref = baseline.reference(name)
        if ref is None:
            continue
        mean, std = ref
        out[name] = round(float(np.clip((value - mean) / std, -6.0, 6.0)), 2)
    return out
