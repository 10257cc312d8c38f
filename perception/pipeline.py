"""The classical perceiver: Whisper ASR + encoder states + openSMILE cues → logistic regression → reasoning.

Owns the per-turn flow and its timings (``timings_ms``): ``asr`` (log-mel, compact encoder pass and
decoding), ``encode`` (pooling the compact states for the estimator), ``acoustics`` (eGeMAPS and
pauses, measured on the analyzer's worker thread while ASR runs), ``estimate`` (probabilities,
valence/arousal) and ``reason`` (z-scores, evidence, text).
Safe to call from several worker threads at once: the models are guarded by their own locks and the
speaker baseline by its own.

    from perception.pipeline import ClassicalPerceiver
    perceiver = ClassicalPerceiver()
    print(perceiver.perceive(load_audio("turn.wav")).model_dump_json(indent=2))
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from perception.acoustics import AcousticAnalyzer, RunningBaseline, zscores
from perception.asr import WhisperASR
from perception.audio import check_usable, to_mono_16k
from perception.base import SAMPLE_RATE, Perceiver, SpeakerBaseline
from perception.config import PerceptionSettings
from perception.estimator import ClassicalEstimator, valence_arousal
from perception.features import feature_vector, pool_states
from perception.reasoning import build_reasoning, build_text_reasoning, lexical_hits, lexicon_scores
from perception.types import Emotion, Perception

# The estimator was trained on pooled states of this Whisper model; other ASR models need it as well.
FEATURE_ASR_MODEL = "tiny.en"


class ClassicalPerceiver(Perceiver):
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
            s.asr_model, beam_size=s.asr_beam_size, cpu_threads=s.cpu_threads, spliced=s.asr_spliced_padding
        )
        asr_is_feature_model = self.asr.name in (FEATURE_ASR_MODEL, "", "default")
        self.feature_asr = (
            self.asr if asr_is_feature_model else WhisperASR(FEATURE_ASR_MODEL, cpu_threads=s.cpu_threads)
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
        if baseline is not None and not isinstance(baseline, RunningBaseline):
            raise TypeError(f"ClassicalPerceiver needs a RunningBaseline, got {type(baseline).__name__}")
        timings: dict[str, float] = {}

        measuring = self.analyzer.submit(audio)  # beside ASR, on the other core
        start = time.perf_counter()
        asr = self.asr.analyze(audio)
        timings["asr"] = _ms(start)

        start = time.perf_counter()
        states = asr.states if self.feature_asr is self.asr else self.feature_asr.encode_compact(audio)
        enc_mean, enc_std = pool_states(states)
        timings["encode"] = _ms(start)

        measurement, timings["acoustics"] = measuring.result()
        cues = measurement.cues(asr.transcript)

        start = time.perf_counter()
        reference = baseline if baseline is not None else self.new_baseline()
        cue_z = zscores(cues, reference)
        scores = self.estimator.predict_proba(feature_vector(measurement.functionals, enc_mean, enc_std))
        label = max(scores, key=lambda k: scores[k])
        valence, arousal = valence_arousal(scores, cue_z)
        timings["estimate"] = _ms(start)

        start = time.perf_counter()
        seeded = reference.n_turns < reference.min_turns
        reasoning = build_reasoning(
            label,
            scores,
            cue_z,
            asr.transcript,
            reference="typical speech" if seeded else "the speaker's baseline",
        )
        if baseline is not None:
            baseline.update(cues)
        timings["reason"] = _ms(start)

        perception = Perception(
            transcript=asr.transcript,
            emotion=Emotion(label=label, scores=scores, valence=valence, arousal=arousal),
            reasoning=reasoning.text,
            evidence=reasoning.evidence,
            model=self.model_id,
            timings_ms=timings,
        )
        return perception, cue_z

    def perceive_text(self, text: str) -> Perception:
        start = time.perf_counter()
        scores = lexicon_scores(lexical_hits(text))
        label = max(scores, key=lambda k: scores[k])
        valence, arousal = valence_arousal(scores)
        reasoning = build_text_reasoning(label, scores, text)
        return Perception(
            transcript=text,
            emotion=Emotion(label=label, scores=scores, valence=valence, arousal=arousal),
            reasoning=reasoning.text,
            evidence=reasoning.evidence,
            model=self.model_id,
            timings_ms={"asr": 0.0, "encode": 0.0, "reason": _ms(start)},
        )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
