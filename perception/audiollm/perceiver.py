"""The AudioLLM perceiver: a trained dual-encoder run behind the :class:`~perception.base.Perceiver` face.

Owns the per-turn flow of ``EMO_PERCEPTION__ESTIMATOR=audiollm`` and its timings (``timings_ms``):
``asr`` (log-mel, the compact Whisper pass and decoding; the log-mel is also the paralinguistic input and
the compact states the semantic one), ``encode`` (the semantic branch's own Whisper pass, when its
Whisper is not the ASR's), ``acoustics`` (eGeMAPS and pauses, measured on a worker thread while the first
two run, so a turn takes less than the sum of its stages), ``estimate`` (the model's own
:meth:`label_scores`, valence/arousal from the classical prototype table) and ``reason`` (generation,
parsing, verification). Every generated evidence item is checked with
:func:`perception.grounding.verify_item` against this turn's transcript and cue z-scores; unverified
items are dropped, and when nothing generated survives the reasoning is rebuilt from the measured cues
(:func:`perception.reasoning.build_reasoning`), so the reasoning only cites checkable evidence.
Thread-safe: one lock around the torch model.

    EMO_PERCEPTION__ESTIMATOR=audiollm EMO_PERCEPTION__ESTIMATOR_PATH=runs/x/final emo-agent serve
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from perception.acoustics import AcousticAnalyzer, CorpusNorms, RunningBaseline, zscores
from perception.audio import check_usable, to_mono_16k
from perception.audiollm.checkpoint import WEIGHTS_NAME
from perception.audiollm.configuration import CONFIG_NAME, DualEncoderConfig
from perception.audiollm.modeling import DualEncoderForEmotionReasoning, resolve_language_model
from perception.audiollm.parsing import ParsedGeneration, parse_generation
from perception.audiollm.processing import DualEncoderProcessor, reasoning_context, utterance_features
from perception.audiollm.speaker_norm import FEATURE_NORMS_NAME, FeatureNorms, SpeakerFeatures
from perception.base import SAMPLE_RATE, Perceiver, PerceptionError, SpeakerBaseline
from perception.config import PerceptionSettings
from perception.estimator import ClassicalEstimator, valence_arousal
from perception.grounding import verify_item
from perception.pipeline import ClassicalPerceiver
from perception.reasoning import LABEL_DISPLAY, build_reasoning
from perception.types import Emotion, Evidence, Perception

log = logging.getLogger(__name__)

DEFAULT_RUN = Path(__file__).resolve().parents[1] / "assets" / "audiollm"
NORMS_NAME = "norms.json"  # cue norms of the training corpus, written by `emo-agent train`


@dataclass
class TurnFeatures:
    """What the two branches hear and what was said, with the time each part took (ms)."""

    transcript: str
    semantic: np.ndarray  # whisper-ct2: (T, C) compact encoder states at 50 frames/s
    paralinguistic: np.ndarray  # mel-cnn: (n_mels, T) log-mel at 100 frames/s; hf: (samples,)
    timings_ms: dict[str, float]
    # the aux head's utterance input (processing.utterance_features): the eGeMAPS functionals, then layers
    acoustic: np.ndarray | None = None
    layers: np.ndarray | None = None  # (len(pooled_layers), 2 * C) pooled Whisper layer states, when asked


FeatureFn = Callable[[np.ndarray], TurnFeatures]


@dataclass
class AudioLLMBaseline(RunningBaseline):
    """The speaker's running cue statistics plus, for a ``speaker_norm`` model, the running statistics
    of both audio streams the model's input is standardised with."""

    features: SpeakerFeatures | None = field(default=None)

    def reset(self) -> None:
        super().reset()
        if self.features is not None:
            self.features.reset()


class WhisperTurnFeatures:
    """Default feature extraction: one log-mel, shared by ASR, the semantic branch and mel-cnn."""

    def __init__(self, config: DualEncoderConfig, settings: PerceptionSettings) -> None:
        from perception.asr import WhisperASR

        if config.semantic.kind != "whisper-ct2":
            raise PerceptionError(
                f"the audiollm perceiver runs semantic kind 'whisper-ct2', not {config.semantic.kind!r}"
            )
        s = settings
        self.asr = WhisperASR(
            s.asr_model, beam_size=s.asr_beam_size, cpu_threads=s.cpu_threads, spliced=s.asr_spliced_padding
        )
        same = _canonical(self.asr.name) == _canonical(config.semantic.name)
        self.encoder = self.asr if same else WhisperASR(config.semantic.name, cpu_threads=s.cpu_threads)
        self.mel_input = config.paralinguistic.kind == "mel-cnn"
        self.layer_stats = None
        if config.semantic.pooled_layers:
            from perception.audiollm.whisper_layers import WhisperLayerStats

            self.layer_stats = WhisperLayerStats.for_whisper(
                config.semantic.name, config.semantic.pooled_layers
            )

    def __call__(self, audio: np.ndarray) -> TurnFeatures:
        start = time.perf_counter()
        result = self.asr.analyze(audio)
        asr_ms = _ms(start)
        start = time.perf_counter()
        if self.encoder is self.asr:
            mel, states = result.mel, result.states  # (T, C): the compact pass the decoding already ran
        else:  # the run's own Whisper: its log-mel (e.g. 80 bins under a 128-bin ASR model) and states
            mel = self.encoder.mel(audio)
            states = self.encoder.encode_compact(audio, mel)
        para = mel.astype(np.float32) if self.mel_input else audio.astype(np.float32)
        timings = {"asr": asr_ms, "encode": _ms(start)}
        layers = None
        if self.layer_stats is not None:  # the encoder's first blocks again, in torch, for their states
            start = time.perf_counter()
            layers = self.layer_stats.stats(mel)
            timings["layers"] = _ms(start)
        return TurnFeatures(result.transcript, states, para, timings, layers=layers)


def _canonical(whisper_name: str) -> str:
    return "tiny.en" if whisper_name in ("", "default") else whisper_name


def missing_run_message(path: Path) -> str:
    return (
        f"no trained AudioLLM at {path}: train one with `emo-agent train --data crema-d=PATH --out runs/x` "
        "and set EMO_PERCEPTION__ESTIMATOR_PATH=runs/x/final"
    )


def run_name(path: Path) -> str:
    """``runs/x/final`` -> ``x``; ``runs/x/checkpoint-200`` -> ``x/checkpoint-200``; the shipped run ->
    ``default``."""
    if path.resolve() == DEFAULT_RUN:
        return "default"
    if path.name == "final":
        return path.resolve().parent.name
    if path.name.startswith("checkpoint-"):
        return f"{path.resolve().parent.name}/{path.name}"
    return path.name


@dataclass
class GenerationStats:
    """What the LM's own writing contributed since the perceiver started (``reasoning_tokens`` > 0):
    turns it wrote for, evidence items it wrote and how many of them verified, and turns whose reasoning
    is the model's text as written (every item verified, the prose complete and about the label)."""

    turns: int = 0
    items: int = 0
    verified: int = 0
    as_written: int = 0
    tokens: int = 0
    generate_ms: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {
            "turns": self.turns,
            "items": self.items,
            "verified": self.verified,
            "verified_share": round(self.verified / self.items, 4) if self.items else 0.0,
            "as_written": self.as_written,
            "ms_per_token": round(self.generate_ms / self.tokens, 1) if self.tokens else 0.0,
        }


class AudioLLMPerceiver(Perceiver):
    """Dual-encoder AudioLLM scores and generated reasoning, with verified evidence only."""

    def __init__(
        self,
        settings: PerceptionSettings | None = None,
        *,
        run_dir: str | Path | None = None,
        features: FeatureFn | None = None,
        analyzer: AcousticAnalyzer | None = None,
        tokenizer=None,  # transformers tokenizer; default: the run folder's, else the base LM's
        language_model: torch.nn.Module | None = None,
        norms: CorpusNorms | None = None,
        max_new_tokens: int | None = None,  # default: settings.reasoning_tokens
        warmup: bool = True,
    ) -> None:
        self.settings = settings or PerceptionSettings()
        path = Path(run_dir or self.settings.estimator_path or DEFAULT_RUN).expanduser()
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise PerceptionError(missing_run_message(path))
        self.run_dir = path
        try:
            config = DualEncoderConfig.load(path)
            if tokenizer is None:
                from transformers import AutoTokenizer

                has_own = (path / "tokenizer_config.json").is_file()
                tokenizer = AutoTokenizer.from_pretrained(
                    str(path) if has_own else resolve_language_model(config.language_model)
                )
            self.processor = DualEncoderProcessor(config, tokenizer)
            self.model = DualEncoderForEmotionReasoning.from_pretrained(path, language_model=language_model)
            self.model.merge_lora()  # inference only: LoRA folded into the LM's weights, fewer ops per token
        except (OSError, ValueError) as exc:
            raise PerceptionError(f"cannot load the AudioLLM run at {path}: {exc}") from exc
        self.config = self.model.config
        self.labels = tuple(self.config.labels)
        self.label_token_ids = self.processor.label_token_ids()
        self.features = features or WhisperTurnFeatures(self.config, self.settings)
        self.analyzer = analyzer or AcousticAnalyzer()
        self.norms = norms or _load_norms(path)
        self.feature_norms = _load_feature_norms(path) if self.config.speaker_norm else None
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else self.settings.reasoning_tokens
        self.model_id = f"dual-encoder:{run_name(path)}@{self.config.version}"
        self._lock = threading.Lock()
        self.generation_stats = GenerationStats()
        if warmup:
            self.warmup()

    def warmup(self) -> None:
        super().warmup()
        self.generation_stats = GenerationStats()  # the tally covers user turns only

    def new_baseline(self) -> AudioLLMBaseline:
        features = SpeakerFeatures(self.config, self.feature_norms) if self.feature_norms else None
        return AudioLLMBaseline(self.norms, features=features)

    def normalized(self, turn: TurnFeatures, baseline: RunningBaseline | None) -> TurnFeatures:
        """The turn's streams standardised against the speaker so far, this turn included (a first turn
        is judged mostly against the training corpus); unchanged for models without ``speaker_norm``."""
        if self.feature_norms is None:
            return turn
        speaker = getattr(baseline, "features", None)
        if speaker is None:  # no conversation (or a plain cue baseline): this turn alone
            speaker = SpeakerFeatures(self.config, self.feature_norms)
        speaker.add(turn.semantic, turn.paralinguistic, turn.acoustic)
        sem, para, acoustic = speaker.normalize(turn.semantic, turn.paralinguistic, turn.acoustic)
        return TurnFeatures(turn.transcript, sem, para, turn.timings_ms, acoustic, turn.layers)

    def perceive(
        self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, baseline: SpeakerBaseline | None = None
    ) -> Perception:
        return self.perceive_with_cues(audio, sample_rate, baseline)[0]

    def perceive_with_cues(
        self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, baseline: SpeakerBaseline | None = None
    ) -> tuple[Perception, dict[str, float]]:
        audio = to_mono_16k(audio, sample_rate)
        check_usable(audio)
        if baseline is not None and not isinstance(baseline, RunningBaseline):
            raise TypeError(f"AudioLLMPerceiver needs a RunningBaseline, got {type(baseline).__name__}")
        measuring = self.analyzer.submit(audio)  # beside ASR, on the other core
        turn = self.features(audio)
        measurement, acoustics_ms = measuring.result()
        timings = {**turn.timings_ms, "acoustics": acoustics_ms}
        cues = measurement.cues(turn.transcript)
        try:
            turn.acoustic = utterance_features(self.config, measurement.functionals, turn.layers)
        except ValueError as exc:  # a feature function that does not give what the run reads
            raise PerceptionError(f"turn features do not fit the AudioLLM run: {exc}") from exc
        turn = self.normalized(turn, baseline)

        start = time.perf_counter()
        reference = baseline if baseline is not None else self.new_baseline()
        cue_z = zscores(cues, reference)
        scores = self.scores(turn)
        label = max(scores, key=lambda k: scores[k])
        valence, arousal = valence_arousal(scores, cue_z)
        timings["estimate"] = _ms(start)

        start = time.perf_counter()
        context = reasoning_context(cue_z, turn.transcript) if self.config.reasoning_context else ""
        parsed = parse_generation(self.generate_text(turn, label, context), self.labels)
        seeded = reference.n_turns < reference.min_turns
        text, evidence = self.grounded_reasoning(
            parsed,
            label,
            scores,
            cue_z,
            turn.transcript,
            "typical speech" if seeded else "the speaker's baseline",
        )
        if baseline is not None:
            baseline.update(cues)
        timings["reason"] = _ms(start)

        perception = Perception(
            transcript=turn.transcript,
            emotion=Emotion(label=label, scores=scores, valence=valence, arousal=arousal),
            reasoning=text,
            evidence=evidence,
            model=self.model_id,
            timings_ms=timings,
        )
        return perception, cue_z

    # -- model calls ----------------------------------------------------------------------------------
    def _batch(
        self, task, turn: TurnFeatures, prefix: str = "", context: str = ""
    ) -> dict[str, torch.Tensor]:
        example = self.processor.encode(
            task, turn.semantic, turn.paralinguistic, prefix=prefix, acoustic=turn.acoustic, context=context
        )
        batch = self.processor.collate([example], padding_side="left")
        batch.pop("emotion_labels", None)
        return batch

    def scores(self, turn: TurnFeatures) -> dict[str, float]:
        """The model's per-label probabilities, rounded to 4 decimals and summing to exactly 1."""
        batch = self._batch("emotion", turn)
        with self._lock:
            probs = self.model.label_scores(**batch, label_token_ids=self.label_token_ids)[0]
        rounded = np.round(probs.double().numpy(), 4)
        rounded[int(np.argmax(rounded))] += 1.0 - rounded.sum()
        return {label: round(float(v), 4) for label, v in zip(self.labels, rounded, strict=True)}

    def generate_text(self, turn: TurnFeatures, label: str | None = None, context: str = "") -> str:
        """The model's ``emotion_reasoning`` answer (greedy). With ``label`` the answer is started as
        ``label: <label>`` and the model writes the evidence and reasoning for it, so the explanation is
        about the label the scores chose. ``context``: the turn's cues and transcript as text, for a
        ``reasoning_context`` model."""
        prefix = f"label: {label}\n" if label else ""
        if self.max_new_tokens <= 0:  # no generation: the reasoning is built from the measured cues
            return prefix
        batch = self._batch("emotion_reasoning", turn, prefix, context)
        with self._lock:
            start = time.perf_counter()
            new = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, pad_token_id=self.processor.pad_id
            )
            self.generation_stats.generate_ms += _ms(start)
            self.generation_stats.tokens += int(new.shape[-1])
        return prefix + self.processor.decode(new)[0]

    # -- reasoning ------------------------------------------------------------------------------------
    def grounded_reasoning(
        self,
        parsed: ParsedGeneration,
        label: str,
        scores: dict[str, float],
        cue_z: dict[str, float],
        transcript: str,
        reference: str,
    ) -> tuple[str, list[Evidence]]:
        """Reasoning text and evidence that cite only what verifies for this turn.

        All items verified, the prose present, complete and about the reported label: the generation as
        is.
        Some verified: the verified items, with a sentence built from them (the prose may lean on a
        dropped item). None: :func:`build_reasoning` over the measured cues and the transcript.
        """
        kept = [e for e in parsed.evidence if verify_item(e, transcript, cue_z)]
        complete = parsed.ok and bool(parsed.reasoning) and parsed.label == label
        as_written = bool(kept) and len(kept) == len(parsed.evidence) and complete
        if self.max_new_tokens > 0:
            stats = self.generation_stats
            stats.turns += 1
            stats.items += len(parsed.evidence)
            stats.verified += len(kept)
            stats.as_written += int(as_written)
        if as_written:
            return parsed.reasoning, kept
        if kept:
            return _sentence_from(kept, label, scores.get(label, 0.0), reference), kept
        if parsed.evidence:
            log.debug("no generated evidence verified (%d items); rebuilding from cues", len(parsed.evidence))
        fallback = build_reasoning(label, scores, cue_z, transcript, reference=reference)
        return fallback.text, fallback.evidence

    def perceive_text(self, text: str) -> Perception:
        return ClassicalPerceiver.perceive_text(self, text)  # type: ignore[arg-type]  # uses model_id only


def _sentence_from(items: list[Evidence], label: str, p: float, reference: str) -> str:
    cues = [f"{e.claim} ({e.cue} z={e.value:+.1f})" for e in items if e.kind == "acoustic"]
    quotes = [f'"{e.quote}" ({e.claim})' for e in items if e.kind == "lexical"]
    shown = LABEL_DISPLAY.get(label, label)
    parts = [f"The speaker sounds {shown} ({p:.0%})"]
    if cues:
        parts.append(f", with {', '.join(cues)} relative to {reference}")
    text = "".join(parts) + "."
    if quotes:
        text += f" The words include {', '.join(quotes)}."
    return text


def _load_norms(path: Path) -> CorpusNorms:
    """The run's training-corpus cue norms (``norms.json`` in the folder or its run folder), else the
    shipped classical estimator's (typical speech)."""
    for candidate in (path / NORMS_NAME, path.parent / NORMS_NAME):
        if candidate.is_file():
            return CorpusNorms.from_json(json.loads(candidate.read_text()))
    return ClassicalEstimator.load().norms


def _load_feature_norms(path: Path) -> FeatureNorms:
    """The training corpus's stream statistics (``feature_norms.json`` in the folder or its run folder)."""
    for candidate in (path / FEATURE_NORMS_NAME, path.parent / FEATURE_NORMS_NAME):
        if candidate.is_file():
            try:
                return FeatureNorms.load(candidate)
            except (OSError, ValueError, KeyError) as exc:
                raise PerceptionError(f"cannot read {candidate}: {exc}") from exc
    raise PerceptionError(
        f"the AudioLLM run at {path} normalises per speaker but has no {FEATURE_NORMS_NAME} "
        "(written by `emo-agent train` into the run folder)"
    )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
