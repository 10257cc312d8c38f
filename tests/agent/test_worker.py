"""`emo-agent worker` processes with real models on a real Redis: sharing the load, a worker killed in the
middle of a turn, order within a session, SIGTERM, and a voice server perceiving through them.

Workers run the classical estimator without the text model (the cheapest real perceiver to load) with one
CPU thread each, on real CREMA-D speech.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from perception.config import PerceptionQueueSettings, PerceptionSettings
from perception.streams import RemotePerceiver
from perception.streams.jobs import Job, QueueKeys
from tests.conftest import REPO_ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIPS = [
    "audio/1001_IEO_ANG_HI.ogg",
    "audio/1001_DFA_SAD_XX.ogg",
    "audio/1002_IEO_HAP_HI.ogg",
    "audio/1002_DFA_NEU_XX.ogg",
]
RECLAIM_IDLE_S = 1.0
PERCEPTION_ENV = {
    "EMO_PERCEPTION__ESTIMATOR": "classical",
    "EMO_PERCEPTION__TEXT_MODEL": "none",
    "EMO_PERCEPTION__CPU_THREADS": "1",
}


class WorkerProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "worker", "--name", name],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def client(redis_sync: Any) -> Any:
    return redis_sync


@pytest.fixture(scope="module")
def queue(client) -> Iterator[PerceptionQueueSettings]:
    stream = f"test-workers-{uuid.uuid4().hex[:10]}"
    yield PerceptionQueueSettings(
        stream=stream, job_timeout_s=120, reclaim_idle_s=RECLAIM_IDLE_S, block_ms=200
    )
    for key in client.scan_iter(match=f"{stream}*"):
        client.delete(key)


class Pool:
    """Worker processes by name, (re)started on demand; all stopped at the end of the module."""

    def __init__(self, client, queue: PerceptionQueueSettings, redis_url: str, log_dir: Path) -> None:
        self.client, self.queue, self.log_dir = client, queue, log_dir
        self.env = {
            **os.environ,
            **PERCEPTION_ENV,
            "EMO_REDIS_URL": redis_url,
            "EMO_PERCEPTION_QUEUE__STREAM": queue.stream,
            "EMO_PERCEPTION_QUEUE__RECLAIM_IDLE_S": str(queue.reclaim_idle_s),
            "EMO_PERCEPTION_QUEUE__BLOCK_MS": str(queue.block_ms),
            "PYTHONUNBUFFERED": "1",
        }
        self.workers: dict[str, WorkerProcess] = {}

    def ensure(self, *names: str) -> list[WorkerProcess]:
        for name in names:
            if name not in self.workers or not self.workers[name].alive():
                self.workers[name] = WorkerProcess(name, self.env, self.log_dir)
        for name in names:
            self.wait_ready(self.workers[name])
        return [self.workers[n] for n in names]

    def wait_ready(self, worker: WorkerProcess, timeout_s: float = 180) -> None:
        """Ready once the worker has joined the group (its first XAUTOCLAIM / XREADGROUP)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not worker.alive():
                pytest.fail(f"worker {worker.name} exited with {worker.proc.returncode}:\n{worker.log()}")
            if worker.name.encode() in self.consumers():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"worker {worker.name} not serving after {timeout_s} s:\n{worker.log()}")
            time.sleep(0.2)

    def consumers(self) -> set[bytes]:
        if not self.client.exists(self.queue.stream):
            return set()
        try:
            return {c["name"] for c in self.client.xinfo_consumers(self.queue.stream, self.queue.group)}
        except Exception:  # the group does not exist yet
            return set()

    def stop(self, *names: str) -> None:
        for name in names or list(self.workers):
            if name in self.workers:
                self.workers[name].stop()


@pytest.fixture(scope="module")
def pool(client, queue, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    p = Pool(client, queue, redis_url, tmp_path_factory.mktemp("workers"))
    yield p
    p.stop()


def load(crema_dir: Path, clip: str) -> np.ndarray:
    audio, rate = sf.read(crema_dir / clip, dtype="float32")
    assert rate == 16000
    return audio


def test_two_workers_share_the_load_and_each_session_stays_in_order(client, queue, pool, crema_dir) -> None:
    pool.ensure("w1", "w2")
    remote = RemotePerceiver(client, queue)
    clips = [load(crema_dir, c) for c in CLIPS]
    served: dict[str, list[tuple[int, str, int, object]]] = {}

    def session(name: str, order: list[int]) -> None:
        baseline = remote.new_baseline()
        for i in order:
            job = remote._job("audio", baseline, audio=clips[i], sample_rate=16000)
            result = remote.run(job)
            baseline.turns += 1
            baseline.load_state(result.baseline)
            n = max(stat[0] for stat in result.baseline["stats"].values())
            served.setdefault(name, []).append((result.seq, result.worker, n, result.perception))

    orders = {f"s{k}": [(k + j) % len(clips) for j in range(3)] for k in range(4)}
    threads = [threading.Thread(target=session, args=item) for item in orders.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(served) == sorted(orders)
    for turns in served.values():  # in order, each against the baseline of all the turns before it
        assert [(seq, n) for seq, _, n, _ in turns] == [(1, 1), (2, 2), (3, 3)]
    assert {w for turns in served.values() for _, w, _, _ in turns} == {"w1", "w2"}

    # The same conversation perceived in this process gives the same perceptions.
    from perception.registry import build_perceiver

    local = build_perceiver(PerceptionSettings(estimator="classical", text_model="none", cpu_threads=1))
    baseline = local.new_baseline()
    for i, (_, _, _, remote_perception) in zip(orders["s1"], served["s1"], strict=True):
        mine = local.perceive(clips[i], 16000, baseline)
        assert mine.transcript == remote_perception.transcript
        assert mine.emotion.label == remote_perception.emotion.label
        for label, score in mine.emotion.scores.items():
            assert remote_perception.emotion.scores[label] == pytest.approx(score, abs=0.02)


def test_a_worker_killed_mid_job_has_its_job_reclaimed_and_no_turn_lost(
    client, queue, pool, crema_dir
) -> None:
    workers = {w.name: w for w in pool.ensure("w1", "w2")}
    remote = RemotePerceiver(client, queue)
    long_turn = np.concatenate([load(crema_dir, c) for c in CLIPS * 3])  # ~30 s: seconds of perception
    job = Job(uuid.uuid4().hex, "audio", 120_000, "killed", 1, audio=long_turn, baseline={})
    results: list = []
    caller = threading.Thread(target=lambda: results.append(remote.run(job)))
    caller.start()
    holder = None
    deadline = time.monotonic() + 30
    while holder is None and time.monotonic() < deadline:
        pending = client.xpending_range(queue.stream, queue.group, min="-", max="+", count=10)
        if pending:
            holder = pending[0]["consumer"].decode()
        else:
            time.sleep(0.01)
    assert holder in workers, f"no worker took the job: {pending}"
    time.sleep(0.3)  # well inside the turn's perception
    assert not client.exists(QueueKeys(queue.stream).result(job.job_id)), "the turn finished before the kill"
    workers[holder].proc.send_signal(signal.SIGKILL)
    workers[holder].proc.wait(10)
    killed_at = time.monotonic()
    caller.join(120)
    assert results, "the turn was lost"
    result = results[0]
    survivor = ({"w1", "w2"} - {holder}).pop()
    assert result.worker == survivor and result.deliveries == 2
    assert result.perception is not None and result.perception.transcript
    assert time.monotonic() - killed_at >= RECLAIM_IDLE_S - 0.5  # reclaimed only once the job looked idle
    deadline = time.monotonic() + 10  # the survivor acknowledges the job just after publishing its result
    while client.xpending(queue.stream, queue.group)["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.xpending(queue.stream, queue.group)["pending"] == 0


def test_sigterm_ends_a_worker_cleanly(client, queue, pool) -> None:
    (worker,) = pool.ensure("w3")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    assert b"w3" not in pool.consumers()  # it held no job, so it left the group
    assert "turns perceived" in worker.log()


async def _typed_turn(ws, text: str) -> dict:
    """The first ``user.perception`` or ``error`` event of a typed turn."""
    await ws.send(json.dumps({"type": "input.text", "text": text}))
    while True:
        msg = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(msg, bytes):
            continue
        event = json.loads(msg)
        if event["type"] in ("user.perception", "error"):
            return event


def test_a_voice_server_in_redis_streams_mode_perceives_through_the_workers(
    client, queue, pool, redis_url: str, tmp_path: Path
) -> None:
    from websockets.asyncio.client import connect

    pool.ensure("w1")
    pool.stop("w2")
    port = free_port()
    env = {
        **pool.env,
        "EMO_PERCEPTION__MODE": "redis-streams",
        "EMO_PERCEPTION_QUEUE__JOB_TIMEOUT_S": "5",
        "EMO_VOICE__TTS_ENABLED": "false",
    }
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def talk() -> tuple[dict, dict]:
        deadline = time.monotonic() + 180
        while True:
            try:
                ws = await connect(f"ws://127.0.0.1:{port}/ws")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not come up:\n{log_path.read_text()}") from None
                await asyncio.sleep(0.5)
        async with ws:
            await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] == "session.started"
            served = await _typed_turn(ws, "I am so happy today")
            pool.stop("w1")  # no worker left: the next turn must fail with the typed timeout
            failed = await _typed_turn(ws, "Is anyone there?")
            return served, failed

    try:
        served, failed = asyncio.run(talk())
    finally:
        server.terminate()
        server.wait(30)
    assert served["type"] == "user.perception", served
    assert served["model"].startswith("classical-egemaps-whisper")  # perceived by the worker's model
    assert failed["type"] == "error" and failed["code"] == "perception_timeout", failed
    assert failed["message"]
