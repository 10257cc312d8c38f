"""Streaming resampling of the client's audio to the 16 kHz the VAD and perception expect.

:class:`StreamingResampler` computes, chunk by chunk, the same output as
``scipy.signal.resample_poly(whole_signal, up, down)`` (same Kaiser-windowed FIR from ``firwin``), so chunk
boundaries leave no clicks: it keeps the few input samples the filter still needs and the index of the next
output sample. Latency is half the filter length, about 10 input samples per unit of ``max(up, down) / up``
(under 2 ms at 44.1 kHz).
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import firwin


class StreamingResampler:
    """Resample float32 audio from ``src_rate`` to ``dst_rate``: ``process`` per chunk, ``flush`` at end."""

    def __init__(self, src_rate: int, dst_rate: int = 16_000) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        g = gcd(src_rate, dst_rate)
        self._up, self._down = dst_rate // g, src_rate // g
        self.passthrough = self._up == self._down == 1
        max_rate = max(self._up, self._down)
        self._half_len = 10 * max_rate
        self._taps = 1
        if self.passthrough:
            self.reset()
            return
        # Exactly scipy.signal.resample_poly's default filter.
        h = firwin(2 * self._half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self._up
        self._taps = -(-len(h) // self._up)  # taps per polyphase branch
        padded = np.zeros(self._taps * self._up)
        padded[: len(h)] = h
        # bank[phase, k] = h[phase + k * up]
        self._bank = padded.reshape(self._taps, self._up).T.astype(np.float64)
        self.reset()

    def reset(self) -> None:
        # Input buffer holds samples with absolute indices [self._base, self._base + len(buf)); it starts with
        # `taps` zeros before index 0 so the first outputs see the zero padding resample_poly assumes.
        self._buf = np.zeros(self._taps, dtype=np.float64)
        self._base = -self._taps
        self._received = 0
        self._next_out = 0

    def _emit(self, upto_input: int) -> np.ndarray:
        """Outputs whose newest needed input index is < ``upto_input``."""
        # Output n needs inputs up to j_hi(n) = (n*down + half_len) // up.
        n_end = (upto_input * self._up - self._half_len - 1) // self._down + 1
        n_end = max(n_end, self._next_out)
        if n_end == self._next_out:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self._next_out, n_end)
        t = n * self._down + self._half_len
        j_hi = t // self._up
        phase = t - j_hi * self._up
        idx = (j_hi - self._base)[:, None] - np.arange(self._taps)[None, :]  # (N, taps)
        out = np.einsum("nk,nk->n", self._buf[idx], self._bank[phase])
        self._next_out = n_end
        # Drop inputs no future output needs.
        t_next = self._next_out * self._down + self._half_len
        keep_from = t_next // self._up - self._taps + 1
        drop = keep_from - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base += drop
        return out.astype(np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one chunk of float32 mono samples; returns whatever output is complete."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return samples
        self._buf = np.concatenate([self._buf, samples.astype(np.float64)])
        self._received += len(samples)
        return self._emit(self._received)

    def flush(self) -> np.ndarray:
        """The remaining outputs (the stream's end is zero-padded, as resample_poly does); then reset."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        total_out = -(-self._received * self._up // self._down)
        pad = self._taps + self._half_len // self._up + 1
        self._buf = np.concatenate([self._buf, np.zeros(pad)])
        out = self._emit(self._received + pad)
        keep = max(0, total_out - (self._next_out - len(out)))
        out = out[:keep]
        self.reset()
        return out
