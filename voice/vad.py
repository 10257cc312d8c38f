"""Silero VAD through its ONNX model: speech probability per 512-sample chunk of 16 kHz audio.

One :class:`SileroVAD` holds the ONNX ``InferenceSession`` (loaded once per process from the model file that
the ``silero-vad`` package ships, no download) and is shared by every session; onnxruntime's ``run`` is safe
to call from several threads. Each session gets its own :class:`SileroVADStream` with the recurrent state
and the 64-sample context the model carries from one chunk to the next.

    vad = SileroVAD()
    stream = vad.new_stream()
    p = stream(chunk)  # chunk: float32, shape (512,), 16 kHz → probability in [0, 1]
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
CHUNK_SAMPLES = 512  # 32 ms; the only chunk size the 16 kHz model accepts
_CONTEXT_SAMPLES = 64
_STATE_SHAPE = (2, 1, 128)


def default_model_path() -> Path:
    """The ONNX model bundled with the ``silero-vad`` package."""
    return Path(str(resources.files("silero_vad.data").joinpath("silero_vad.onnx")))


class SileroVAD:
    """The shared model. Cheap to call; create one per process and a stream per session."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime  # imported here: only the VAD needs it

        opts = onnxruntime.SessionOptions()
        # One chunk is a tiny graph; more threads only add contention with perception and TTS.
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads
        self.model_path = Path(model_path) if model_path else default_model_path()
        self._session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def new_stream(self) -> SileroVADStream:
        """Fresh per-session state."""
        return SileroVADStream(self)

    def _run(self, x: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        prob, new_state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
        return float(prob.reshape(-1)[0]), new_state


class SileroVADStream:
    """One session's VAD state. Call it with consecutive 512-sample chunks; not thread-safe by itself."""

    def __init__(self, model: SileroVAD) -> None:
        self._model = model
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT_SAMPLES), dtype=np.float32)

    def __call__(self, chunk: np.ndarray) -> float:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(1, -1)
        if chunk.shape[1] != CHUNK_SAMPLES:
            raise ValueError(f"Silero VAD takes {CHUNK_SAMPLES}-sample chunks, got {chunk.shape[1]}")
        x = np.concatenate([self._context, chunk], axis=1)  # (1, 576)
        prob, self._state = self._model._run(x, self._state)
        self._context = x[:, -_CONTEXT_SAMPLES:]
        return prob
