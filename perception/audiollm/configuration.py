"""Configuration of the dual-encoder AudioLLM and the one helper that does its length arithmetic.

Owns :class:`DualEncoderConfig` (a composite config: semantic encoder, paralinguistic encoder, adapters,
language model, LoRA, placeholder token, label set; saved as JSON) and :func:`audio_token_counts`, the
single place that says how many audio placeholder tokens a clip becomes. The processor builds prompts with
it and the model checks its projected frames against it, so the two can never disagree silently.

Swapping a part is a config change::

    cfg = DualEncoderConfig(semantic=SemanticEncoderConfig(kind="whisper-hf", name="openai/whisper-large-v3",
                                                           hidden_size=1280),
                            paralinguistic=ParalinguisticEncoderConfig(kind="hf",
                                                                       name="emotion2vec/emotion2vec_plus_large"),
                            language_model="google/gemma-2-9b-it")
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from perception.types import LABELS

CONFIG_NAME = "config.json"


def conv_out_length(n: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Output length of one 1-D convolution (PyTorch's formula)."""
    return (n + 2 * padding - kernel) // stride + 1


@dataclass
class SemanticEncoderConfig:
    """What the speech (semantic) branch hears with.

    ``kind="whisper-ct2"``: states of the bundled CTranslate2 Whisper (``name`` as in
    :func:`perception.asr.resolve_model`), computed outside torch, frozen, cacheable per clip; the model's
    tower is the identity. ``kind="whisper-hf"``: a transformers ``WhisperEncoder`` loaded from ``name``
    (a local directory or hub id; needs the weights), fed log-mel and optionally fine-tuned.
    """

    kind: Literal["whisper-ct2", "whisper-hf"] = "whisper-ct2"
    name: str = "tiny.en"
    hidden_size: int = 384  # whisper tiny: 384, base: 512, large-v3: 1280
    frames_per_second: int = 50  # Whisper encoder: 100 mel frames/s, conv stride 2
    trainable: bool = False  # only meaningful for whisper-hf; the CTranslate2 encoder cannot train
    # 50 fps / 5 = 10 tokens per second: ~3-4 tokens per spoken word, enough for the LM to transcribe,
    # and a 30 s turn costs 300 tokens. The paper's 15 -> 1 (3.3 tokens/s) suits a 9B LM better than 135M.
    stack: int = 5
    # Encoder layers (0: the first block's input, k: block k's output) whose states, mean + std pooled over
    # the turn, the MLP aux head also reads (perception.audiollm.whisper_layers). Emotion is clearer part-way
    # up the encoder than in its last layer, which serves the decoder. [] : none.
    pooled_layers: list[int] = field(default_factory=list)


@dataclass
class ParalinguisticEncoderConfig:
    """What the emotion (paralinguistic) branch hears with.

    ``kind="mel-cnn"``: a small conv + transformer network over 80-bin log-mel (100 frames/s) that trains
    from scratch on a CPU; two stride-2 convolutions bring it to 25 frames/s. ``kind="hf"``: any
    transformers audio encoder taking 16 kHz waveforms (emotion2vec ports, WavLM, HuBERT: ``name`` is a
    directory or hub id; 50 frames/s).
    """

    kind: Literal["mel-cnn", "hf"] = "mel-cnn"
    name: str = ""
    n_mels: int = 80
    hidden_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    trainable: bool = True
    # 25 fps / 5 = 5 tokens per second: prosody (pitch contours, loudness, pauses) moves slower than words.
    stack: int = 5


@dataclass
class ProjectorConfig:
    """The MLP adapter of each branch: stacked frames -> LM hidden size."""

    hidden_size: int = 1024
    dropout: float = 0.0


@dataclass
class LoraSettings:
    """peft LoRA on the language model. ``r=0`` turns LoRA off (the LM then stays frozen)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class DualEncoderConfig:
    """Everything needed to rebuild a :class:`~perception.audiollm.modeling.DualEncoderForEmotionReasoning`.

    ``language_model``: ``"smollm2-135m"`` (the bundled SmolLM2-135M-Instruct, converted once by
    :func:`dialogue.llm.convert_bundled_model`), a directory holding a transformers causal LM, or a hub id.
    ``audio_token``: the placeholder string; the processor adds it to the tokenizer when missing, its id is
    recorded in ``audio_token_id`` so a saved model reloads with the same vocabulary.
    """

    semantic: SemanticEncoderConfig = field(default_factory=SemanticEncoderConfig)
    paralinguistic: ParalinguisticEncoderConfig = field(default_factory=ParalinguisticEncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    language_model: str = "smollm2-135m"
    audio_token: str = "<|audio|>"
    audio_token_id: int | None = None
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    # An auxiliary linear emotion head over the mean of the projected audio tokens. It gives calibrated
    # per-label scores in one pass; its loss is added with this weight (0 disables the head).
    aux_head: bool = True
    aux_loss_weight: float = 0.5
    # 0: the head is linear over the mean of all audio tokens. > 0: an MLP of this width over the mean and
    # standard deviation of each stream's tokens (how a voice varies over the turn carries emotion too).
    aux_hidden: int = 256
    # MLP heads initialised independently and trained side by side on the same batches, each with its own
    # loss; the scores are their mean probability. Averaging heads evens out how one initialisation happens
    # to fit the training speakers (>1 needs aux_hidden > 0).
    aux_heads: int = 1
    # Utterance-level acoustic descriptors the MLP aux head reads besides the towers' pooled states: the
    # openSMILE eGeMAPSv02 functionals (88 values: pitch, loudness, voice quality, spectral balance,
    # rhythm) the perceiver measures for its evidence anyway, speaker-normalised like the streams.
    # 0: none. Measured descriptors generalise across speakers where a tower trained on one corpus
    # overfits it.
    acoustic_functionals: int = 88
    # Where label_scores come from: "lm" (label-token likelihoods at the answer position) or "aux".
    score_source: Literal["lm", "aux"] = "aux"
    # The emotion_reasoning prompt also gives the turn's measured cues (z-scores with their plain-words
    # claims) and transcript as text, as the teacher had them: the LM picks and cites evidence it can read
    # instead of guessing numbers from audio tokens (processing.reasoning_context).
    reasoning_context: bool = False
    # Per-speaker standardisation of both streams (perception.audiollm.speaker_norm): each clip is
    # compared with its speaker's statistics, blended with the corpus ones by k / (k + prior) after k clips.
    speaker_norm: bool = True
    speaker_norm_prior: float = 10.0
    # Training-time augmentation of the log-mel stream (SpecAugment-style masks, level and noise jitter).
    augment: bool = True
    max_audio_seconds: float = 30.0
    version: str = "0.1.0"

    @property
    def utterance_size(self) -> int:
        """Width of the aux head's utterance-level input (``acoustic_features``): the eGeMAPS
        functionals, then the pooled states of ``semantic.pooled_layers``; 0 when the head reads none."""
        if not self.aux_hidden:
            return 0
        return self.acoustic_functionals + 2 * self.semantic.hidden_size * len(self.semantic.pooled_layers)

    # -- JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        """From :meth:`to_dict` output or a hand-written subset (missing fields take their defaults,
        except ``acoustic_functionals``: a config without it is from a run whose aux head did not read
        them, so it is 0 unless given)."""
        parts = {
            "semantic": SemanticEncoderConfig,
            "paralinguistic": ParalinguisticEncoderConfig,
            "projector": ProjectorConfig,
            "lora": LoraSettings,
        }
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DualEncoderConfig field(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {"acoustic_functionals": 0}  # configs saved before the aux head read them
        for key, value in data.items():
            kwargs[key] = parts[key](**value) if key in parts and isinstance(value, dict) else value
        return cls(**kwargs)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> DualEncoderConfig:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        return cls.from_dict(json.loads(path.read_text()))


# -- length arithmetic ------------------------------------------------------------------------------------


def semantic_frames(config: DualEncoderConfig, input_length: int) -> int:
    """Encoder frames of the semantic branch for an input of ``input_length``.

    whisper-ct2: the input *is* the encoder states, so frames = input length. whisper-hf: the input is
    log-mel at 100 frames/s and the encoder's stride-2 convolution halves it.
    """
    if config.semantic.kind == "whisper-hf":
        return conv_out_length(conv_out_length(input_length, stride=1), stride=2)
    return input_length


def paralinguistic_frames(config: DualEncoderConfig, input_length: int) -> int:
    """Encoder frames of the paralinguistic branch: mel-cnn halves log-mel frames twice; a wav2vec-style
    ``hf`` encoder turns samples into 50 frames/s (its conv stack: receptive field 400, stride 320)."""
    if config.paralinguistic.kind == "hf":
        return max(1, (input_length - 400) // 320 + 1)
    return conv_out_length(conv_out_length(input_length))


def stacked_length(frames: int, stack: int) -> int:
    """Tokens after stacking ``stack`` frames into one (the last group is zero-padded)."""
    return -(-max(1, frames) // stack)


def audio_token_counts(
    config: DualEncoderConfig, semantic_length: int, paralinguistic_length: int
) -> tuple[int, int]:
    """``(semantic_tokens, paralinguistic_tokens)`` one clip becomes, from its two input lengths
    (semantic: states or mel frames; paralinguistic: mel frames or samples). The prompt holds their sum
    of audio placeholders: semantic tokens first, then paralinguistic ones."""
    n_sem = stacked_length(semantic_frames(config, semantic_length), config.semantic.stack)
    n_para = stacked_length(paralinguistic_frames(config, paralinguistic_length), config.paralinguistic.stack)
    return n_sem, n_para
