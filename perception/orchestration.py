"""The per-turn flow every audio perceiver shares: :class:`PerceptionPipeline`.

One turn, whatever estimates its emotion: the audio is brought to mono 16 kHz and checked; the acoustic
measurement (eGeMAPS and pauses) runs on the analyzer's worker thread while the estimator listens (ASR and
its encoder features) on this one; the measured cues become z-scores against the speaker's running
baseline (against typical speech, the corpus norms, until the baseline has seen enough turns); the
estimator's scores give the label, and with the cues valence and arousal; the reasoning is written; the
turn is folded into the baseline; the :class:`~perception.types.Perception` is assembled.

An estimator supplies only what differs (:class:`~perception.pipeline.ClassicalPerceiver`,
:class:`~perception.audiollm.perceiver.AudioLLMPerceiver`):

* :meth:`~PerceptionPipeline.listen`: ASR and the estimator's encoder features, with their timings;
* :meth:`~PerceptionPipeline.prepare` (optional): the turn's features completed with the acoustic
  measurement and the speaker's baseline, before the estimate;
* :meth:`~PerceptionPipeline.estimate`: its features -> per-label probabilities;
* :meth:`~PerceptionPipeline.explain` (optional): the reasoning text and evidence; by default the cue
  template (:func:`perception.reasoning.build_reasoning`) over the measured cues and the transcript;
* ``model_id``, :meth:`~perception.base.Perceiver.new_baseline` and ``baseline_type``, the baseline class a
  caller's baseline must be.

``timings_ms``, in this order: whatever :meth:`listen` timed (``asr``: log-mel, encoder pass and decoding;
``encode``: the estimator's own encoder features; estimator-specific stages such as ``layers``), then
``acoustics`` (the measurement, on the worker thread, so a turn takes less than the sum of its stages),
``estimate`` (probabilities, valence/arousal), ``text`` (with a text-emotion model: reading the transcript
and fusing it with the voice, :mod:`perception.fusion`) and ``reason`` (the reasoning and the baseline
update).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Generic, Protocol, TypeVar

import numpy as np

from perception.acoustics import AcousticAnalyzer, AcousticMeasurement, RunningBaseline, zscores
from perception.audio import check_usable, to_mono_16k
from perception.base import SAMPLE_RATE, Perceiver, SpeakerBaseline
from perception.estimator import valence_arousal
from perception.fusion import fuse
from perception.reasoning import build_reasoning, text_model_sentence
from perception.types import Emotion, Evidence, Perception

SEEDED_REFERENCE = "typical speech"  # what cues are judged against before the baseline has enough turns
SPEAKER_REFERENCE = "the speaker's baseline"


class Heard(Protocol):
    """What an estimator's :meth:`~PerceptionPipeline.listen` returns: at least the transcript and the
    time (ms) each of its stages took."""

    transcript: str
    timings_ms: dict[str, float]


HeardT = TypeVar("HeardT", bound=Heard)


class PerceptionPipeline(Perceiver, Generic[HeardT]):
    """The shared per-turn flow; subclasses supply listening, estimating and (optionally) reasoning."""

    analyzer: AcousticAnalyzer
    #: The speaker baseline a caller may pass (a subclass of it from :meth:`new_baseline` is fine).
    baseline_type: type[RunningBaseline] = RunningBaseline

    @abstractmethod
    def new_baseline(self) -> RunningBaseline: ...

    @abstractmethod
    def listen(self, audio: np.ndarray) -> HeardT:
        """ASR and the estimator's features for mono 16 kHz ``audio``, with their ``timings_ms``."""

    def prepare(
        self, heard: HeardT, measurement: AcousticMeasurement, baseline: RunningBaseline | None
    ) -> HeardT:
        """The features the estimate reads, given the turn's acoustic measurement and the conversation's
        baseline (``None`` outside a conversation). Untimed; by default ``heard`` as it is."""
        return heard

    @abstractmethod
    def estimate(self, heard: HeardT, measurement: AcousticMeasurement) -> dict[str, float]:
        """Per-label probabilities over the estimator's labels, summing to 1."""

    def explain(
        self, heard: HeardT, label: str, scores: dict[str, float], cue_z: dict[str, float], reference: str
    ) -> tuple[str, list[Evidence]]:
        """Reasoning text and evidence for ``label``; ``reference`` names what the cues were judged
        against. By default the cue template over the measured cues and the transcript."""
        reasoning = build_reasoning(label, scores, cue_z, heard.transcript, reference=reference)
        return reasoning.text, reasoning.evidence

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
        audio = to_mono_16k(audio, sample_rate)
        check_usable(audio)
        if baseline is not None and not isinstance(baseline, self.baseline_type):
            raise TypeError(
                f"{type(self).__name__} needs a {self.baseline_type.__name__}, got {type(baseline).__name__}"
            )
        measuring = self.analyzer.submit(audio)  # beside ASR, on the other core
        heard = self.listen(audio)
        measurement, acoustics_ms = measuring.result()
        timings = {**heard.timings_ms, "acoustics": acoustics_ms}
        cues = measurement.cues(heard.transcript)
        heard = self.prepare(heard, measurement, baseline)

        start = time.perf_counter()
        reference = baseline if baseline is not None else self.new_baseline()
        cue_z = zscores(cues, reference)
        scores = self.estimate(heard, measurement)
        valence, arousal = valence_arousal(scores, cue_z)
        timings["estimate"] = elapsed_ms(start)
        words_sentence = None
        if self.text_model is not None and self.text_weight > 0 and heard.transcript.strip():
            start = time.perf_counter()
            reading = self.text_model.read(heard.transcript)  # alone: see "What the words say"
            fused = fuse(scores, valence, arousal, reading, self.text_weight)
            scores, valence, arousal = fused.scores, fused.valence, fused.arousal
            if fused.text_share >= 0.05:
                words_sentence = text_model_sentence(
                    reading.label, reading.scores[reading.label], reading.words, fused.text_share
                )
            timings["text"] = elapsed_ms(start)
        label = max(scores, key=lambda k: scores[k])

        start = time.perf_counter()
        seeded = reference.n_turns < reference.min_turns
        text, evidence = self.explain(
            heard, label, scores, cue_z, SEEDED_REFERENCE if seeded else SPEAKER_REFERENCE
        )
        if words_sentence is not None:
            text = f"{text} {words_sentence[0]}".strip()
            evidence = [*evidence, *words_sentence[1]]
        if baseline is not None:
            baseline.update(cues)
            baseline.remember_text(heard.transcript)  # context for the typed turns that follow
        timings["reason"] = elapsed_ms(start)

        perception = Perception(
            transcript=heard.transcript,
            emotion=Emotion(label=label, scores=scores, valence=valence, arousal=arousal),
            reasoning=text,
            evidence=evidence,
            model=self.model_id,
            timings_ms=timings,
        )
        return perception, cue_z


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading), to one decimal."""
    return round((time.perf_counter() - start) * 1000, 1)
