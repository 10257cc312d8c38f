"""Per-clip features for training, computed once and cached under ``<cache_dir>/audiollm-features/``.

For every clip: the semantic input (CTranslate2 Whisper encoder states of the compact pass, ``(T, C)``
at 50 frames/s; the same pass the run-time perceiver uses), the paralinguistic input (Whisper's 80-bin
log-mel, ``(80, T)`` at 100 frames/s), the raw acoustic cues and the 88 eGeMAPS functionals
(:mod:`perception.acoustics`), a transcript (the corpus's own when it has one, else Whisper's) and, for a
config with ``semantic.pooled_layers``, the mean + std pooled states of every Whisper encoder layer
(:mod:`perception.audiollm.whisper_layers`; entries written before are completed on first read).
Entries are ``.npz`` files keyed by the clip's content (SHA-1 of its bytes) and transcript and by the
extractor's signature, so changing the encoder never mixes features and a copied corpus reuses them.
``whisper-hf`` / ``hf`` configurations cache log-mel / waveforms instead (their towers run inside torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perception.audio import file_digest
from perception.audiollm.configuration import DualEncoderConfig
from perception.audiollm.processing import utterance_features
from perception.finetune.datasets import Clip

log = logging.getLogger(__name__)


@dataclass
class ClipFeatures:
    semantic: np.ndarray  # whisper-ct2: (T, C) states; whisper-hf: (n_mels, T) log-mel
    paralinguistic: np.ndarray  # mel-cnn: (n_mels, T) log-mel; hf: (samples,) waveform
    cues: dict[str, float]  # raw cue values (perception.acoustics.CUES), not yet z-scored
    transcript: str
    acoustic: np.ndarray | None = None  # (88,) eGeMAPSv02 functionals, not yet normalised
    layers: np.ndarray | None = None  # (n_blocks + 1, 2 * C) pooled states of every Whisper encoder layer
    # the aux head's input as the config reads it (processing.utterance_features), set by FeatureCache.get
    utterance: np.ndarray | None = None

    def head_input(self) -> np.ndarray | None:
        """The aux head's utterance input: as :meth:`FeatureCache.get` composed it for the model's config,
        else the functionals as they are."""
        return self.utterance if self.utterance is not None else self.acoustic


Extractor = Callable[[Clip], ClipFeatures]


class WhisperFeatureExtractor:
    """The default extractor: bundled Whisper (states, mel, ASR) + openSMILE cues."""

    def __init__(self, config: DualEncoderConfig, cache_dir: Path | None = None) -> None:
        from perception.acoustics import AcousticAnalyzer
        from perception.asr import WhisperASR

        self.config = config
        self.asr = WhisperASR(
            config.semantic.name if config.semantic.kind == "whisper-ct2" else "tiny.en", cache_dir=cache_dir
        )
        self.analyzer = AcousticAnalyzer()
        self.hf_mel = None
        self.layer_stats = None
        if config.semantic.pooled_layers:
            from perception.audiollm.whisper_layers import WhisperLayerStats

            self.layer_stats = WhisperLayerStats.for_whisper(config.semantic.name, None, cache_dir)
            WhisperLayerStats(self.layer_stats.encoder, config.semantic.pooled_layers)  # checks the range
        if config.semantic.kind == "whisper-hf":  # its own mel (large-v3: 128 bins)
            from transformers import WhisperFeatureExtractor as HFMel

            self.hf_mel = HFMel.from_pretrained(config.semantic.name)

    @property
    def signature(self) -> str:
        c = self.config
        return f"{c.semantic.kind}:{c.semantic.name}|{c.paralinguistic.kind}|compact-v2"

    def __call__(self, clip: Clip) -> ClipFeatures:
        audio = clip_audio(clip)
        mel = self.asr.mel(audio).astype(np.float32)
        if self.hf_mel is not None:
            semantic = self.hf_mel(audio, sampling_rate=16_000, return_tensors="np", padding=False)
            semantic = semantic["input_features"][0].astype(np.float32)  # (n_mels, T)
        else:
            semantic = self.asr.encode_compact(audio, mel)  # (T, C)
        paralinguistic = mel if self.config.paralinguistic.kind == "mel-cnn" else audio.astype(np.float32)
        transcript = clip.transcript or self.asr.transcribe(audio)
        measurement = self.analyzer.measure(audio)
        acoustic = measurement.functionals.astype(np.float32)
        features = ClipFeatures(semantic, paralinguistic, measurement.cues(transcript), transcript, acoustic)
        if self.layer_stats is not None:
            features.layers = self.layer_stats.stats(semantic if self.hf_mel is not None else mel)
        return features

    def layers(self, clip: Clip, features: ClipFeatures) -> np.ndarray:
        """Pooled states of every encoder layer (to complete cache entries written without them)."""
        if self.layer_stats is None:
            raise ValueError("this extractor's config pools no encoder layers")
        if self.hf_mel is not None:
            mel = features.semantic  # whisper-hf caches its own log-mel
        elif self.config.paralinguistic.kind == "mel-cnn":
            mel = features.paralinguistic  # the same log-mel
        else:
            mel = self.asr.mel(clip_audio(clip))
        return self.layer_stats.stats(mel)

    def acoustic(self, clip: Clip) -> np.ndarray:
        """The clip's eGeMAPS functionals alone (to complete cache entries written without them)."""
        return self.analyzer.measure(clip_audio(clip)).functionals.astype(np.float32)


def clip_audio(clip: Clip) -> np.ndarray:
    """The clip's 16 kHz audio as its ``condition`` hears it (degraded reproducibly: the same clip and
    condition always give the same samples)."""
    from perception.audio import load_audio

    audio = load_audio(clip.path)
    if clip.condition == "clean":
        return audio
    from perception.degradations import degrade

    seed = int(hashlib.sha1(f"{file_digest(clip.path)}|{clip.condition}".encode()).hexdigest()[:8], 16)
    return degrade(audio, clip.condition, np.random.default_rng(seed))


class FeatureCache:
    """``.npz`` per clip under ``root/<signature hash>/``; :meth:`get` computes what is missing."""

    def __init__(self, root: Path, extractor: Extractor, signature: str | None = None) -> None:
        signature = signature or getattr(extractor, "signature", "custom")
        self.root = Path(root) / "audiollm-features" / hashlib.sha1(signature.encode()).hexdigest()[:12]
        self.extractor = extractor
        self.config: DualEncoderConfig | None = getattr(extractor, "config", None)

    def key(self, clip: Clip) -> Path:
        raw = f"{file_digest(clip.path)}|{clip.transcript or ''}"
        if clip.condition != "clean":
            raw += f"|{clip.condition}"
        return self.root / f"{hashlib.sha1(raw.encode()).hexdigest()}.npz"

    def get(self, clip: Clip) -> ClipFeatures:
        path = self.key(clip)
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                features = ClipFeatures(
                    data["semantic"].astype(np.float32),
                    data["paralinguistic"].astype(np.float32),
                    meta["cues"],
                    meta["transcript"],
                    data["acoustic"].astype(np.float32) if "acoustic" in data.files else None,
                    data["layers"].astype(np.float32) if "layers" in data.files else None,
                )
            changed = False
            complete = getattr(self.extractor, "acoustic", None)
            if features.acoustic is None and complete is not None:  # an entry from before they were kept
                features.acoustic, changed = complete(clip), True
            if features.layers is None and self._needs_layers:
                features.layers, changed = self.extractor.layers(clip, features), True
            if changed:
                self._save(path, features)
        else:
            features = self.extractor(clip)
            self._save(path, features)
        if self.config is not None:  # else head_input() gives the functionals as they are
            rows = features.layers[self.config.semantic.pooled_layers] if self._needs_layers else None
            features.utterance = utterance_features(self.config, features.acoustic, rows)
        return features

    def _complete(self, path: Path) -> bool:
        """Whether the entry exists with everything this config reads (pooled layers included)."""
        if not path.is_file():
            return False
        if not self._needs_layers:
            return True
        with np.load(path, allow_pickle=False) as data:  # reads the archive's index, not its arrays
            return "layers" in data.files

    @property
    def _needs_layers(self) -> bool:
        return bool(self.config is not None and self.config.semantic.pooled_layers)

    @staticmethod
    def _save(path: Path, features: ClipFeatures) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: processes of a launch sharing the cache each replace the entry whole
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        arrays = {
            "semantic": features.semantic.astype(np.float16),  # halves the cache; states fit fp16 well
            "paralinguistic": features.paralinguistic.astype(np.float16),
            "meta": np.array(json.dumps({"cues": features.cues, "transcript": features.transcript})),
        }
        if features.acoustic is not None:
            arrays["acoustic"] = features.acoustic.astype(np.float32)  # openSMILE values span decades
        if features.layers is not None:
            arrays["layers"] = features.layers.astype(np.float32)
        np.savez(tmp, **arrays)
        tmp.replace(path)

    def warm(self, clips: Iterable[Clip], progress: bool = True) -> list[Clip]:
        """Compute every missing entry (with a progress bar). Returns the usable clips: one that is not
        usable audio (silent, too short, unreadable) is logged and left out, never fatal to a corpus."""
        from perception.base import AudioError

        usable: list[Clip] = []
        for clip in tqdm(list(clips), desc="features", unit="clip", disable=not progress):
            if not self._complete(self.key(clip)):
                try:
                    self.get(clip)
                except AudioError as exc:
                    log.warning("skipping %s: %s", clip.path.name, exc)
                    continue
            usable.append(clip)
        return usable
