"""The perception section of the configuration tree (``EMO_PERCEPTION__*``).

:class:`PerceptionSettings` is a plain model: the perception package never reads the environment;
``agent.config.Settings`` composes this section into the one ``EMO_`` tree and passes it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


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
    # True (the default): Whisper decodes each turn from the speech's encoder states (with
    # asr_splice_context_s of its padding) spliced before the silence's states, computed once: a quarter
    # of the cost of the standard pass. False: the standard pass, the turn padded with silence to its 30 s
    # window and all of it encoded. On 360 validation CREMA-D clips the WER is 0.230 against the standard
    # pass's 0.214 (docs/perception.md, "Speech recognition").
    asr_spliced_padding: bool = True
    # With spliced decoding, seconds of the padding encoded together with the speech before the silence's
    # states take over, so the last words' states have seen silence after them (0: the speech alone).
    asr_splice_context_s: float = Field(default=1.0, ge=0, le=30)
    # The text-emotion model (perception/text_emotion.py, trained on EmpatheticDialogues): "shipped" (the
    # weights in perception/assets), a path to an `emo-agent train-text-emotion` output's
    # text_emotion.npz, or "none" (typed turns then get the emotion lexicon, spoken turns the voice alone).
    text_model: str = "shipped"
    # How much the words can move a spoken turn's estimate (perception/fusion.py): at most this share,
    # scaled by how emotional the words are; 0 leaves spoken turns to the voice.
    text_weight: float = 0.3
    # CPU threads for CTranslate2 and onnxruntime; 0 lets the library decide. One: Whisper is as fast on one
    # thread as on two here, and the acoustics and the reply use the other core (docs/testing.md).
    cpu_threads: int = 1
    # Where the models run: "cpu" (the embedded default), "cuda", "cuda:N" (the N-th GPU) or "auto" (a GPU
    # when CUDA is usable, else the CPU). On CUDA, Whisper (CTranslate2) runs in float16 instead of int8 and
    # the AudioLLM's model (towers, heads, its LM) moves to the GPU; the pooled Whisper layers and openSMILE
    # stay on the CPU. Needs a CUDA build of torch and CTranslate2 (Dockerfile.gpu).
    device: str = "cpu"
    # Where turns are perceived by the voice server: "in-process" (the default: the models above are loaded
    # in the server) or "redis-streams" (jobs on a Redis stream served by `emo-agent worker` processes, on
    # this or other machines; the ``perception_queue`` section, docs/scaling.md). Workers always perceive
    # in-process.
    mode: Literal["in-process", "redis-streams"] = "in-process"


class PerceptionQueueSettings(BaseModel):
    """The Redis Streams job queue between voice servers and perception workers (docs/scaling.md)."""

    # Redis holding the queue; empty: the top-level ``redis_url``.
    redis_url: str = ""
    # Key prefix of the stream, its consumer group and the per-job result keys.
    stream: str = "emo:perception:jobs"
    group: str = "perceivers"
    # Seconds a voice server waits for a turn's result before the turn fails with PerceptionTimeout. Must
    # cover a reclaim (reclaim_idle_s + block_ms) plus a turn's perception on the slowest worker.
    job_timeout_s: float = 15.0
    # A job pending this long without its worker's heartbeat is taken over by another worker (XAUTOCLAIM):
    # the time a crashed worker's turn waits. A live worker renews its job every reclaim_idle_s / 4.
    reclaim_idle_s: float = 5.0
    # A job delivered this many times (its workers died each time) is answered with an error, not retried.
    max_deliveries: int = 3
    # Seconds a result stays readable (and a duplicate delivery recognised) after it was written.
    result_ttl_s: int = 120
    # Longest wait of one XREADGROUP; also how often an idle worker looks for jobs to reclaim.
    block_ms: int = 1000
    # This worker's name in the consumer group; empty: "<host>-<pid>" (unique per process).
    consumer: str = ""
