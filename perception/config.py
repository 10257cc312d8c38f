"""The perception section of the configuration tree (``EMO_PERCEPTION__*``).

:class:`PerceptionSettings` is a plain model: the perception package never reads the environment;
``agent.config.Settings`` composes this section into the one ``EMO_`` tree and passes it in.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


def default_cache_dir() -> Path:
    """Where converted models (the bundled LM's safetensors, joined Whisper base) and feature caches live
    unless the caller passes a directory (``EMO_CACHE_DIR`` in the agent's settings)."""
    return Path.home() / ".cache" / "emo-agent"


class PerceptionSettings(BaseModel):
    """How speech becomes a :class:`perception.types.Perception`."""

    # Which emotion estimator runs after ASR and acoustic measurement. "audiollm" is the dual-encoder
    # AudioLLM (the shipped run in perception/assets/audiollm, trained on CREMA-D); "classical" is the
    # lighter eGeMAPS + Whisper-encoder logistic regression; other estimators register under their own name.
    estimator: str = "audiollm"
    # Path to the estimator's weights; empty means the ones shipped inside the package.
    estimator_path: str = ""
    # Most tokens the AudioLLM's LM writes for its evidence and reasoning per turn. 0: the reasoning is
    # built from the model's scores and the measured cues, with no generation. N > 0: the LM writes (before
    # the reply, about 100 ms per token on a 2-core CPU) and only what verifies against the turn is kept.
    # The shipped run's LM writing does not verify yet (docs/audiollm.md), so the default is 0.
    reasoning_tokens: int = 0
    # Whisper model: "tiny.en" (bundled, default), "base" (pip extra whisper-base) or a CTranslate2 model
    # directory / hub name where the hub can be reached.
    asr_model: str = "tiny.en"
    asr_beam_size: int = 1
    # Whisper decodes each turn from the standard pass: the turn padded with silence to its 30 s window,
    # all of it encoded. True decodes instead from the speech's compact encoder states spliced before the
    # silence's states (computed once): a quarter of the cost, but on 360 held-out CREMA-D clips its WER
    # is 0.224 against the standard pass's 0.217 (same emotion UA), so it is off by default
    # (docs/perception.md, "Speech recognition").
    asr_spliced_padding: bool = False
    # The text-emotion model (perception/text_emotion.py, trained on EmpatheticDialogues): "shipped" (the
    # weights in perception/assets), a path to an `emo-agent train-text-emotion` output's
    # text_emotion.npz, or "none" (typed turns then get the emotion lexicon, spoken turns the voice alone).
    text_model: str = "shipped"
    # How much the words can move a spoken turn's estimate (perception/fusion.py): at most this share,
    # scaled by how emotional the words are; 0 leaves spoken turns to the voice.
    text_weight: float = 0.3
    # CPU threads for CTranslate2 and onnxruntime; 0 lets the library decide.
    cpu_threads: int = 0
