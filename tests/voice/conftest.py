"""Fixtures for the voice tests: the shared Silero model and a real server over fake models."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.voice.voice_fakes import free_port, make_services
from voice.client import load_audio
from voice.resample import StreamingResampler
from voice.server import serve
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
    services = make_services()
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(services, "127.0.0.1", port, ready=ready, vad=silero, playback_lead_s=0.2, handle_signals=False)
    )
    await asyncio.wait_for(ready.wait(), 10)
    yield SimpleNamespace(
        url=f"ws://127.0.0.1:{port}/ws", http=f"http://127.0.0.1:{port}", services=services, task=task
    )
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def server_factory(silero: SileroVAD) -> AsyncIterator[Callable[..., Any]]:
    """Start real servers over fake models with the given voice settings (``await launch(**voice)``); all
    of them are stopped at the end."""
    tasks: list[asyncio.Task[None]] = []

    async def launch(**voice: Any) -> SimpleNamespace:
        services = make_services(**voice)
        port = free_port()
        ready = asyncio.Event()
        task = asyncio.create_task(
            serve(
                services,
                "127.0.0.1",
                port,
                ready=ready,
                vad=silero,
                playback_lead_s=0.2,
                handle_signals=False,
            )
        )
        tasks.append(task)
        await asyncio.wait_for(ready.wait(), 10)
        return SimpleNamespace(
            url=f"ws://127.0.0.1:{port}/ws", http=f"http://127.0.0.1:{port}", port=port, services=services
        )

    yield launch
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
