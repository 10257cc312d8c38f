"""Shared fixtures: where the data is, which Redis the tests use, a real running server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CREMA_D = (REPO_ROOT.parent / "shared" / "data" / "crema-d").resolve()


@pytest.fixture(scope="session")
def crema_dir() -> Path:
    if not (CREMA_D / "manifest.csv").exists():
        reason = f"CREMA-D not found at {CREMA_D} (expected beside the repository)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)  # CI always has the data: a missing folder is a broken setup, not a skip
        pytest.skip(reason)
    return CREMA_D


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis the integration tests use (scripts/test.sh starts one on port 6390)."""
    return os.environ.get("EMO_REDIS_URL", "redis://127.0.0.1:6390/0")


@pytest.fixture(scope="session")
def redis_sync(redis_url: str) -> Iterator[Any]:
    """A synchronous redis-py client of :func:`redis_url`; fails the test when no Redis answers there."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"these tests need Redis at {redis_url}: {exc}")
    yield client
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server of the test's own (append-only file on, so what it had survives a restart)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.folder), "--daemonize", "yes"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        for _ in range(100):
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        for _ in range(100):
            if not self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not stop")

    def ping(self) -> bool:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return done.stdout.strip() == "PONG"


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        reason = "redis-server is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    proc = RedisProcess(tmp_path)
    proc.start()
    yield proc
    proc.stop()


class RunningServer:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``emo-agent serve`` as a real process on a free port, with the real default models."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "EMO_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningServer(proc, port, log_path)
    deadline = time.monotonic() + 300  # first start converts the bundled LLM once
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{running.log()}")
        try:
            with urllib.request.urlopen(f"{running.http_url}/health", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server not healthy after 300 s:\n{running.log()}")
        time.sleep(0.5)
    yield running
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
