"""What the AudioLLM's two branches hear of a turn: :class:`TurnFeatures` and the default extraction.

:class:`WhisperTurnFeatures` runs one log-mel shared by ASR, the semantic branch and the mel-cnn
paralinguistic branch: the ASR pass's compact encoder states are the semantic input when the run's Whisper
is the ASR's; otherwise the run's own Whisper gives its log-mel (e.g. 80 bins under a 128-bin ASR model)
and states. Its timings are the turn's ``asr`` (log-mel, compact pass, decoding), ``encode`` (the run's own
Whisper pass, when it is not the ASR's) and ``layers`` (pooled intermediate Whisper layers, for a run
whose aux head reads them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from perception.audiollm.configuration import DualEncoderConfig
from perception.base import PerceptionError
from perception.config import PerceptionSettings
from perception.orchestration import elapsed_ms


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
            s.asr_model,
            beam_size=s.asr_beam_size,
            cpu_threads=s.cpu_threads,
            spliced=s.asr_spliced_padding,
            splice_context_s=s.asr_splice_context_s,
            device=s.device,
        )
        same = _canonical(self.asr.name) == _canonical(config.semantic.name)
        self.encoder = (
            self.asr if same else WhisperASR(config.semantic.name, cpu_threads=s.cpu_threads, device=s.device)
        )
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
        asr_ms = elapsed_ms(start)
        start = time.perf_counter()
        if self.encoder is self.asr:
            mel, states = result.mel, result.states  # (T, C): the compact pass the decoding already ran
        else:  # the run's own Whisper: its log-mel (e.g. 80 bins under a 128-bin ASR model) and states
            mel = self.encoder.mel(audio)
            states = self.encoder.encode_compact(audio, mel)
        para = mel.astype(np.float32) if self.mel_input else audio.astype(np.float32)
        timings = {"asr": asr_ms, "encode": elapsed_ms(start)}
        layers = None
        if self.layer_stats is not None:  # the encoder's first blocks again, in torch, for their states
            start = time.perf_counter()
            layers = self.layer_stats.stats(mel)
            timings["layers"] = elapsed_ms(start)
        return TurnFeatures(result.transcript, states, para, timings, layers=layers)


def _canonical(whisper_name: str) -> str:
    return "tiny.en" if whisper_name in ("", "default") else whisper_name
