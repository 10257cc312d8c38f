"""Fixtures for the voice tests: the shared Silero model and a real server over fake models."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.voice.voice_fakes import make_services, serving
from voice.client import load_audio
from voice.resample import StreamingResampler
from voice.vad import SileroVAD


@pytest.fixture(scope="session")
def silero() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="session")
def speech_clip(crema_dir: Path) -> np.ndarray:
    """A real CREMA-D sentence (about 2.3 s, speech from ~0.9 s), float32 at 16 kHz."""
    path = crema_dir / "audio" / "1001_DFA_ANG_XX.ogg"
    audio, rate = load_audio(path)
    resampler = StreamingResampler(rate, 16_000)
    return np.concatenate([resampler.process(audio), resampler.flush()])


@pytest.fixture
async def voice_server(silero: SileroVAD) -> AsyncIterator[SimpleNamespace]:
    async with serving(make_services(), silero) as server:
        yield server


@pytest.fixture
async def server_factory(silero: SileroVAD) -> AsyncIterator[Callable[..., Any]]:
    """Start real servers over fake models with the given voice settings (``await launch(**voice)``); all
    of them are stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def launch(**voice: Any) -> SimpleNamespace:
            return await stack.enter_async_context(serving(make_services(**voice), silero))

        yield launch
