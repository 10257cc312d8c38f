"""The AudioLLM perceiver: a trained dual-encoder run behind the :class:`~perception.base.Perceiver` face.

``EMO_PERCEPTION__ESTIMATOR=audiollm`` (the default). The per-turn flow and its ``timings_ms`` are the
shared pipeline's (:class:`perception.orchestration.PerceptionPipeline`); this perceiver supplies:

* listening (:mod:`.turn_features`): ``asr`` (log-mel, the compact Whisper pass and decoding; the log-mel
  is also the paralinguistic input and the compact states the semantic one), ``encode`` (the semantic
  branch's own Whisper pass, when its Whisper is not the ASR's), ``layers`` (pooled Whisper layers, for a
  run whose aux head reads them);
* the turn's streams and utterance descriptors standardised against the speaker so far
  (:meth:`AudioLLMPerceiver.normalized`, a ``speaker_norm`` run), then the estimate: the model's own
  :meth:`label_scores`, by default the aux heads' (``score_source="aux"``);
* the reasoning (:mod:`.grounded`): with ``reasoning_tokens`` > 0 the LM writes evidence and prose for the
  label and only what verifies against the turn is kept; with 0 (the default) nothing is generated and the
  cue template (:func:`perception.reasoning.build_reasoning`) writes it from the measured cues.

The language model (and its LoRA, merged for inference) is loaded only when something reads it:
generation (``reasoning_tokens`` > 0) or LM label scores (``score_source="lm"``). Otherwise the towers,
adapters and aux heads are all that is loaded. Thread-safe: one lock around the torch model.

    EMO_PERCEPTION__ESTIMATOR=audiollm EMO_PERCEPTION__ESTIMATOR_PATH=runs/x/final emo-agent serve
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from perception.acoustics import AcousticAnalyzer, AcousticMeasurement, CorpusNorms, RunningBaseline
from perception.audiollm.checkpoint import WEIGHTS_NAME, attach_language_model, load_trainable
from perception.audiollm.configuration import CONFIG_NAME, DualEncoderConfig
from perception.audiollm.grounded import GenerationStats, grounded_reasoning
from perception.audiollm.parsing import parse_generation
from perception.audiollm.processing import DualEncoderProcessor, reasoning_context, utterance_features
from perception.audiollm.run_folder import (
    DEFAULT_RUN,
    load_feature_norms,
    load_norms,
    load_tokenizer,
    missing_run_message,
    run_name,
)
from perception.audiollm.speaker_norm import SpeakerFeatures
from perception.audiollm.turn_features import FeatureFn, TurnFeatures, WhisperTurnFeatures
from perception.base import PerceptionError
from perception.config import PerceptionSettings
from perception.devices import torch_device
from perception.orchestration import PerceptionPipeline, elapsed_ms
from perception.types import Evidence

__all__ = ["DEFAULT_RUN", "AudioLLMBaseline", "AudioLLMPerceiver", "TurnFeatures", "WhisperTurnFeatures"]


@dataclass
class AudioLLMBaseline(RunningBaseline):
    """The speaker's running cue statistics plus, for a ``speaker_norm`` model, the running statistics
    of both audio streams the model's input is standardised with."""

    features: SpeakerFeatures | None = field(default=None)

    def reset(self) -> None:
        super().reset()
        if self.features is not None:
            self.features.reset()

    def to_state(self) -> dict:
        state = {**super().to_state(), "kind": "audiollm"}
        state["features"] = self.features.to_state() if self.features is not None else None
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        features = state.get("features")
        if self.features is not None:
            self.features.load_state(features or {})


class AudioLLMPerceiver(PerceptionPipeline[TurnFeatures]):
    """Dual-encoder AudioLLM scores, with reasoning that cites verified evidence only."""

    def __init__(
        self,
        settings: PerceptionSettings | None = None,
        *,
        run_dir: str | Path | None = None,
        features: FeatureFn | None = None,
        analyzer: AcousticAnalyzer | None = None,
        tokenizer=None,  # transformers tokenizer; default: the run folder's, else the base LM's
        language_model: torch.nn.Module | None = None,  # the base LM, when it is loaded (default: config's)
        norms: CorpusNorms | None = None,
        max_new_tokens: int | None = None,  # default: settings.reasoning_tokens
        warmup: bool = True,
    ) -> None:
        self.settings = settings or PerceptionSettings()
        path = Path(run_dir or self.settings.estimator_path or DEFAULT_RUN).expanduser()
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise PerceptionError(missing_run_message(path))
        self.run_dir = path
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else self.settings.reasoning_tokens
        self._base_lm = language_model
        self._lock = threading.Lock()
        try:
            config = DualEncoderConfig.load(path)
            self.processor = DualEncoderProcessor(config, tokenizer or load_tokenizer(path, config))
            self.model = load_trainable(path, with_language_model=False)  # towers, adapters, aux heads
        except (OSError, ValueError) as exc:
            raise PerceptionError(f"cannot load the AudioLLM run at {path}: {exc}") from exc
        self.config = self.model.config
        self.device = torch_device(self.settings.device)
        self.model.to(self.device)
        if self.needs_language_model:
            self.ensure_language_model()
        self.labels = tuple(self.config.labels)
        self.label_token_ids = self.processor.label_token_ids()
        self.features = features or WhisperTurnFeatures(self.config, self.settings)
        self.analyzer = analyzer or AcousticAnalyzer()
        self.norms = norms or load_norms(path)
        self.feature_norms = load_feature_norms(path) if self.config.speaker_norm else None
        self.model_id = f"dual-encoder:{run_name(path)}@{self.config.version}"
        self.generation_stats = GenerationStats()
        if warmup:
            self.warmup()

    # -- the language model, only when read -----------------------------------------------------------
    @property
    def needs_language_model(self) -> bool:
        """Whether anything reads the LM: generation (``max_new_tokens`` > 0) or LM label scores."""
        return self.max_new_tokens > 0 or self.config.score_source != "aux"

    @property
    def language_model_loaded(self) -> bool:
        return self.model.language_model is not None

    def ensure_language_model(self) -> None:
        """Load the run's base LM and LoRA (merged for inference), once; a no-op when loaded."""
        with self._lock:
            if self.model.language_model is not None:
                return
            try:
                attach_language_model(self.model, self.run_dir, self._base_lm)
            except (OSError, ValueError) as exc:
                raise PerceptionError(
                    f"cannot load the language model of the AudioLLM run at {self.run_dir}: {exc}"
                ) from exc
            self.model.merge_lora()  # inference only: LoRA folded into the LM's weights, fewer ops per token
            self.model.to(self.device)
            self._base_lm = None

    def warmup(self) -> None:
        super().warmup()
        self.generation_stats = GenerationStats()  # the tally covers user turns only

    def new_baseline(self) -> AudioLLMBaseline:
        features = SpeakerFeatures(self.config, self.feature_norms) if self.feature_norms else None
        return AudioLLMBaseline(self.norms, features=features)

    # -- the pipeline's stages ------------------------------------------------------------------------
    def listen(self, audio: np.ndarray) -> TurnFeatures:
        return self.features(audio)

    def prepare(
        self, heard: TurnFeatures, measurement: AcousticMeasurement, baseline: RunningBaseline | None
    ) -> TurnFeatures:
        try:
            heard.acoustic = utterance_features(self.config, measurement.functionals, heard.layers)
        except ValueError as exc:  # a feature function that does not give what the run reads
            raise PerceptionError(f"turn features do not fit the AudioLLM run: {exc}") from exc
        return self.normalized(heard, baseline)

    def estimate(self, heard: TurnFeatures, measurement: AcousticMeasurement) -> dict[str, float]:
        return self.scores(heard)

    def explain(
        self,
        heard: TurnFeatures,
        label: str,
        scores: dict[str, float],
        cue_z: dict[str, float],
        reference: str,
    ) -> tuple[str, list[Evidence]]:
        context = reasoning_context(cue_z, heard.transcript) if self.config.reasoning_context else ""
        parsed = parse_generation(self.generate_text(heard, label, context), self.labels)
        stats = self.generation_stats if self.max_new_tokens > 0 else None
        return grounded_reasoning(parsed, label, scores, cue_z, heard.transcript, reference, stats)

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

    # -- model calls ----------------------------------------------------------------------------------
    def _batch(
        self, task, turn: TurnFeatures, prefix: str = "", context: str = ""
    ) -> dict[str, torch.Tensor]:
        example = self.processor.encode(
            task, turn.semantic, turn.paralinguistic, prefix=prefix, acoustic=turn.acoustic, context=context
        )
        batch = self.processor.collate([example], padding_side="left")
        batch.pop("emotion_labels", None)
        return {name: value.to(self.device) for name, value in batch.items()}

    def scores(self, turn: TurnFeatures) -> dict[str, float]:
        """The model's per-label probabilities, rounded to 4 decimals and summing to exactly 1."""
        batch = self._batch("emotion", turn)
        with self._lock:
            probs = self.model.label_scores(**batch, label_token_ids=self.label_token_ids)[0]
        rounded = np.round(probs.double().cpu().numpy(), 4)
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
        self.ensure_language_model()
        batch = self._batch("emotion_reasoning", turn, prefix, context)
        with self._lock:
            start = time.perf_counter()
            new = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, pad_token_id=self.processor.pad_id
            )
            self.generation_stats.generate_ms += elapsed_ms(start)
            self.generation_stats.tokens += int(new.shape[-1])
        return prefix + self.processor.decode(new)[0]
