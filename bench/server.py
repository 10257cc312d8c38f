"""A real ``emo-agent serve`` process for the benchmarks that measure from outside, over the websocket.

    with served(port=8799, redis_url=...) as server:
        ...  # ws://127.0.0.1:8799/ws ; server.pid, server.startup_s

The server runs with the product's defaults (plus ``env``), its output discarded, and is stopped (SIGTERM)
when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    port: int
    pid: int
    startup_s: float

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@contextlib.contextmanager
def served(
    port: int, redis_url: str, env: dict[str, str] | None = None, timeout_s: float = 300
) -> Iterator[Server]:
    """Start ``emo-agent serve --port PORT`` and wait until ``/health`` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "EMO_REDIS_URL": redis_url, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - started > timeout_s:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.5)
        yield Server(port, proc.pid, time.perf_counter() - started)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, val = line.split(":")
            out[key] = int(val.split()[0]) / 1024
    return out
