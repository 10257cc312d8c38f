"""The classical perceiver: Whisper ASR + encoder states + openSMILE cues → logistic regression → reasoning.

Supplies what is its own to the shared per-turn flow (:class:`perception.orchestration.PerceptionPipeline`,
which owns the order of the stages and ``timings_ms``): listening (``asr``: log-mel, compact encoder pass
and decoding; ``encode``: pooling the compact states for the estimator), the estimate (eGeMAPS
functionals and pooled states → logistic regression) and its baseline (:class:`RunningBaseline` over the
estimator's corpus norms). The reasoning is the cue template's (:func:`perception.reasoning.build_reasoning`).
Safe to call from several worker threads at once: the models are guarded by their own locks and the
speaker baseline by its own.

    from perception.pipeline import ClassicalPerceiver
    perceiver = ClassicalPerceiver()
    print(perceiver.perceive(load_audio("turn.wav")).model_dump_json(indent=2))
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.acoustics import AcousticAnalyzer, AcousticMeasurement, RunningBaseline
from perception.asr import WhisperASR
from perception.config import PerceptionSettings
from perception.estimator import ClassicalEstimator
from perception.features import feature_vector, pool_states
from perception.orchestration import PerceptionPipeline, elapsed_ms

# The estimator was trained on pooled states of this Whisper model; other ASR models need it as well.
FEATURE_ASR_MODEL = "tiny.en"


@dataclass
class ClassicalTurn:
    """What the classical estimator hears of a turn: the transcript and the ASR encoder's states pooled
    over it (mean and standard deviation per dimension)."""

    transcript: str
    timings_ms: dict[str, float]
    enc_mean: np.ndarray
    enc_std: np.ndarray


class ClassicalPerceiver(PerceptionPipeline[ClassicalTurn]):
    """eGeMAPS + Whisper-encoder logistic regression, with evidence-grounded reasoning."""

    def __init__(
        self,
        settings: PerceptionSettings | None = None,
        *,
        estimator: ClassicalEstimator | None = None,
        asr: WhisperASR | None = None,
        analyzer: AcousticAnalyzer | None = None,
        warmup: bool = True,
    ) -> None:
        self.settings = settings or PerceptionSettings()
        s = self.settings
        self.estimator = estimator or ClassicalEstimator.load(s.estimator_path or None)
        self.asr = asr or WhisperASR(
            s.asr_model,
            beam_size=s.asr_beam_size,
            cpu_threads=s.cpu_threads,
            spliced=s.asr_spliced_padding,
            splice_context_s=s.asr_splice_context_s,
            device=s.device,
        )
        asr_is_feature_model = self.asr.name in (FEATURE_ASR_MODEL, "", "default")
        self.feature_asr = (
            self.asr
            if asr_is_feature_model
            else WhisperASR(FEATURE_ASR_MODEL, cpu_threads=s.cpu_threads, device=s.device)
        )
        self.analyzer = analyzer or AcousticAnalyzer()
        variant = "default"
        if s.estimator_path:
            variant = Path(s.estimator_path).stem
        if not asr_is_feature_model:
            variant += f"+asr-{Path(self.asr.name).name}"
        self.model_id = f"classical-egemaps-whisper:{variant}@{self.estimator.meta.get('version', 1)}"
        if warmup:
            self.warmup()

    def new_baseline(self) -> RunningBaseline:
        return RunningBaseline(self.estimator.norms)

    def listen(self, audio: np.ndarray) -> ClassicalTurn:
        start = time.perf_counter()
        asr = self.asr.analyze(audio)
        timings = {"asr": elapsed_ms(start)}
        start = time.perf_counter()
        states = asr.states if self.feature_asr is self.asr else self.feature_asr.encode_compact(audio)
        enc_mean, enc_std = pool_states(states)
        timings["encode"] = elapsed_ms(start)
        return ClassicalTurn(asr.transcript, timings, enc_mean, enc_std)

    def estimate(self, heard: ClassicalTurn, measurement: AcousticMeasurement) -> dict[str, float]:
        x = feature_vector(measurement.functionals, heard.enc_mean, heard.enc_std)
        return self.estimator.predict_proba(x)
