"""Perception jobs on Redis Streams (perception.streams), against a real Redis, with workers in threads.

The perceiver here is a small real one (a loudness cue against a RunningBaseline) so each test runs in
well under a second; tests/agent/test_worker.py runs `emo-agent worker` processes with real models.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from perception.acoustics import CorpusNorms, RunningBaseline, zscores
from perception.base import AudioError, Perceiver, PerceptionError, SpeakerBaseline
from perception.config import PerceptionQueueSettings
from perception.streams import (
    PerceptionTimeout,
    PerceptionWorker,
    RemoteBaseline,
    RemotePerceiver,
    RemotePerceptionError,
)
from perception.streams.jobs import Job, JobResult, QueueKeys
from perception.types import Emotion, Perception

pytestmark = pytest.mark.integration


class LevelPerceiver(Perceiver):
    """The turn's RMS level as a cue, judged against the speaker's RunningBaseline. ``hold``: when set,
    each turn waits for it (a slow turn); ``delay_s`` a fixed cost per turn."""

    model_id = "level-test@1"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.hold: threading.Event | None = None
        self.started = threading.Event()
        self.turns = 0

    def new_baseline(self) -> RunningBaseline:
        return RunningBaseline(CorpusNorms({"level": 0.1}, {"level": 0.05}), min_turns=1)

    def perceive(self, audio, sample_rate=16000, baseline=None) -> Perception:
        return self.perceive_with_cues(audio, sample_rate, baseline)[0]

    def perceive_with_cues(self, audio, sample_rate=16000, baseline: SpeakerBaseline | None = None):
        self.started.set()
        if self.hold is not None:
            self.hold.wait(10)
        time.sleep(self.delay_s)
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size < 1600:
            raise AudioError("audio is too short")
        cues = {"level": float(np.sqrt(np.mean(audio**2)))}
        reference = baseline if isinstance(baseline, RunningBaseline) else self.new_baseline()
        cue_z = zscores(cues, reference)
        if isinstance(baseline, RunningBaseline):
            baseline.update(cues)
        self.turns += 1
        loud = cue_z["level"] > 1
        scores = {"angry": 0.8, "neutral": 0.2} if loud else {"angry": 0.2, "neutral": 0.8}
        emotion = Emotion(label=max(scores, key=scores.get), scores=scores, valence=0.0, arousal=0.0)
        return Perception(
            transcript=f"rate {sample_rate}", emotion=emotion, reasoning="", model=self.model_id
        ), cue_z


@pytest.fixture
def client(redis_sync: Any) -> Any:
    return redis_sync


@pytest.fixture
def settings(client) -> Iterator[PerceptionQueueSettings]:
    stream = f"test-streams-{uuid.uuid4().hex[:10]}"
    yield PerceptionQueueSettings(stream=stream, job_timeout_s=5, reclaim_idle_s=0.4, block_ms=100)
    for key in client.scan_iter(match=f"{stream}*"):
        client.delete(key)


class Running:
    """Workers in threads, stopped (and joined) at the end of the test."""

    def __init__(self) -> None:
        self.workers: list[tuple[PerceptionWorker, threading.Thread]] = []

    def start(self, perceiver: Perceiver, client, settings: PerceptionQueueSettings, name: str):
        worker = PerceptionWorker(perceiver, client, settings.model_copy(update={"consumer": name}))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self.workers.append((worker, thread))
        return worker, thread

    def stop(self) -> None:
        for worker, _ in self.workers:
            worker.stop()
        for _, thread in self.workers:
            thread.join(10)


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    yield r
    r.stop()


def wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def tone(level: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (level * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_a_turn_through_the_queue_is_the_local_perception_and_the_baseline_comes_back(
    client, settings, running
) -> None:
    running.start(LevelPerceiver(), client, settings, "w1")
    remote, local = RemotePerceiver(client, settings), LevelPerceiver()
    remote_baseline, local_baseline = remote.new_baseline(), local.new_baseline()
    for level in (0.1, 0.1, 0.3, 0.1):
        got, got_cues = remote.perceive_with_cues(tone(level), 16000, remote_baseline)
        want, want_cues = local.perceive_with_cues(tone(level), 16000, local_baseline)
        assert got == want and got_cues == want_cues
    assert remote_baseline.turns == 4
    restored = local.new_baseline()
    restored.load_state(remote_baseline.state)
    assert restored.to_state() == local_baseline.to_state()
    assert remote.model_id == "level-test@1"
    assert remote.perceive(tone(0.1), 8000).transcript == "rate 8000"  # the rate travels with the audio


def test_typed_turns_and_audio_errors_come_back_typed(client, settings, running) -> None:
    running.start(LevelPerceiver(), client, settings, "w1")
    remote = RemotePerceiver(client, settings)
    typed = remote.perceive_text("I am so happy today")
    assert typed.model == "level-test@1" and typed.transcript == "I am so happy today"
    with pytest.raises(AudioError, match="too short"):
        remote.perceive(np.zeros(100, dtype=np.float32), 16000, remote.new_baseline())


def test_a_typed_turn_travels_with_its_conversations_earlier_turns(client, settings, running) -> None:
    seen: list[list[str] | None] = []

    class Recording(LevelPerceiver):
        def perceive_text(self, text: str, baseline: SpeakerBaseline | None = None) -> Perception:
            seen.append(baseline.recent_texts() if baseline is not None else None)
            return super().perceive_text(text, baseline)

    running.start(Recording(), client, settings, "w1")
    remote = RemotePerceiver(client, settings)
    conversation = remote.new_baseline()
    remote.perceive_text("My dog died.", conversation)
    remote.perceive_text("Yeah, it was awful.", conversation)
    remote.perceive_text("A turn of its own.")
    assert seen == [None, ["My dog died."], None]
    assert conversation.recent_texts() == ["My dog died.", "Yeah, it was awful."]
    job = Job("j1", "text", 1000, text="t", context=["a", "b"])
    wire = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in job.fields().items()}
    assert Job.from_fields(wire).context == ["a", "b"]


def test_no_worker_means_a_typed_timeout(client, settings) -> None:
    remote = RemotePerceiver(client, settings.model_copy(update={"job_timeout_s": 0.5}))
    start = time.monotonic()
    with pytest.raises(PerceptionTimeout) as raised:
        remote.perceive(tone(0.1), 16000, remote.new_baseline())
    assert 0.5 <= time.monotonic() - start < 2.0
    assert isinstance(raised.value, PerceptionError) and isinstance(raised.value, TimeoutError)


def test_a_job_whose_caller_gave_up_is_dropped_unserved(client, settings, running) -> None:
    remote = RemotePerceiver(client, settings.model_copy(update={"job_timeout_s": 0.2}))
    with pytest.raises(PerceptionTimeout):
        remote.perceive(tone(0.1), 16000)
    perceiver = LevelPerceiver()
    running.start(perceiver, client, settings, "late")
    assert wait_for(lambda: client.xlen(settings.stream) == 0) and perceiver.turns == 0


def test_a_duplicate_delivery_gives_one_result(client, settings, running) -> None:
    remote = RemotePerceiver(client, settings)
    job = Job("dup" + uuid.uuid4().hex[:8], "audio", 5000, "s", 1, audio=tone(0.1), baseline={})
    remote.submit(job)
    remote.submit(job)  # the same job twice, as a redelivery after a presumed death puts it
    perceivers = [LevelPerceiver(delay_s=0.2), LevelPerceiver(delay_s=0.2)]
    for i, perceiver in enumerate(perceivers):
        running.start(perceiver, client, settings, f"w{i}")
    result = remote.wait(job)
    assert wait_for(lambda: client.xlen(settings.stream) == 0)  # both deliveries handled
    keys = QueueKeys(settings.stream)
    assert client.llen(keys.done(job.job_id)) == 0  # the caller took the one result; no second one came
    assert JobResult.from_json(client.get(keys.result(job.job_id))).worker == result.worker
    assert sum(w.served for w, _ in running.workers) == 1
    assert client.xlen(settings.stream) == 0


def test_a_job_held_by_a_dead_consumer_is_reclaimed(client, settings, running) -> None:
    remote = RemotePerceiver(client, settings)
    PerceptionWorker(LevelPerceiver(), client, settings).ensure_group()
    job = Job(uuid.uuid4().hex, "audio", 5000, "s", 1, audio=tone(0.1), baseline={})
    remote.submit(job)
    # A consumer takes the job and is never heard of again (its process died).
    client.xreadgroup(settings.group, "dead", {settings.stream: ">"}, count=1)
    start = time.monotonic()
    running.start(LevelPerceiver(), client, settings, "alive")
    result = remote.wait(job)
    assert result.worker == "alive" and result.deliveries == 2
    assert time.monotonic() - start >= 0.3  # not before reclaim_idle_s (0.4 s) had passed since the read
    assert wait_for(lambda: client.xpending(settings.stream, settings.group)["pending"] == 0)  # acked after


def test_a_job_that_keeps_killing_its_workers_gets_an_error(client, settings, running) -> None:
    remote = RemotePerceiver(client, settings)
    PerceptionWorker(LevelPerceiver(), client, settings).ensure_group()
    job = Job(uuid.uuid4().hex, "audio", 5000, "s", 1, audio=tone(0.1), baseline={})
    entry = remote.submit(job)
    client.xreadgroup(settings.group, "dead-1", {settings.stream: ">"}, count=1)
    for n in (2, 3):  # two more workers take it and die
        client.xclaim(settings.stream, settings.group, f"dead-{n}", 0, [entry])
    perceiver = LevelPerceiver()
    running.start(perceiver, client, settings, "alive")
    with pytest.raises(RemotePerceptionError) as raised:
        remote.wait(job)
    assert raised.value.kind == "undeliverable" and perceiver.turns == 0


def test_a_live_workers_slow_turn_is_not_taken_over(client, settings, running) -> None:
    slow = LevelPerceiver(delay_s=1.5)  # almost four times reclaim_idle_s
    running.start(slow, client, settings, "slow")
    remote = RemotePerceiver(client, settings)
    done: list = []
    thread = threading.Thread(
        target=lambda: done.append(remote.run(Job(uuid.uuid4().hex, "audio", 5000, audio=tone(0.1))))
    )
    thread.start()
    assert slow.started.wait(5)
    other = LevelPerceiver()
    running.start(other, client, settings, "other")  # would reclaim the job if the heartbeat did not renew it
    thread.join(10)
    assert done and done[0].worker == "slow" and done[0].deliveries == 1 and other.turns == 0


def test_stop_finishes_the_job_in_hand_and_leaves_the_group(client, settings, running) -> None:
    perceiver = LevelPerceiver()
    perceiver.hold = threading.Event()
    worker, thread = running.start(perceiver, client, settings, "stopping")
    remote = RemotePerceiver(client, settings)
    results: list = []
    caller = threading.Thread(target=lambda: results.append(remote.perceive(tone(0.1), 16000)))
    caller.start()
    assert perceiver.started.wait(5)
    worker.stop()
    perceiver.hold.set()
    thread.join(5)
    caller.join(5)
    assert not thread.is_alive() and len(results) == 1
    consumers = [c["name"] for c in client.xinfo_consumers(settings.stream, settings.group)]
    assert b"stopping" not in consumers


def test_two_workers_share_sessions_and_each_session_stays_in_order(client, settings, running) -> None:
    for i in range(2):
        running.start(LevelPerceiver(delay_s=0.05), client, settings, f"w{i}")
    remote = RemotePerceiver(client, settings)
    levels = [0.1, 0.2, 0.1, 0.3, 0.15]
    seen: dict[str, list[tuple[int, str, int]]] = {}

    def session(name: str) -> None:
        baseline = remote.new_baseline()
        for level in levels:
            job = remote._job("audio", baseline, audio=tone(level), sample_rate=16000)
            result = remote.run(job)
            baseline.turns += 1
            baseline.load_state(result.baseline)
            n = max(s[0] for s in result.baseline["stats"].values())
            seen.setdefault(name, []).append((result.seq, result.worker, n))

    threads = [threading.Thread(target=session, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(seen) == ["s0", "s1", "s2", "s3"]
    for turns in seen.values():
        # in order, each turn perceived against the baseline of every turn before it
        assert [(seq, n) for seq, _, n in turns] == [(i, i) for i in range(1, len(levels) + 1)]
    workers = {w for turns in seen.values() for _, w, _ in turns}
    assert workers == {"w0", "w1"}


def test_baselines_of_the_shipped_models_travel_as_json() -> None:
    baseline = LevelPerceiver().new_baseline()
    baseline.update({"level": 0.2})
    baseline.update({"level": 0.25})
    state = json.loads(json.dumps(baseline.to_state()))
    copy = LevelPerceiver().new_baseline()
    copy.load_state(state)
    assert copy.reference("level") == baseline.reference("level") and copy.n_turns == 2
    assert RemoteBaseline().state == {}


def test_a_worker_rejoins_a_group_that_disappeared(client, settings, running) -> None:
    worker, _ = running.start(LevelPerceiver(), client, settings, "w1")
    remote = RemotePerceiver(client, settings)
    remote.perceive(tone(0.1), 16000)
    client.delete(settings.stream)  # as after a Redis restart without persistence
    assert remote.perceive(tone(0.1), 16000).model == "level-test@1"
    assert wait_for(lambda: worker.served == 2)


def test_a_worker_rejoins_when_the_stream_goes_during_its_blocking_read(client, settings, running) -> None:
    settings = settings.model_copy(update={"block_ms": 3000})
    worker, thread = running.start(LevelPerceiver(), client, settings, "w1")
    remote = RemotePerceiver(client, settings)
    remote.perceive(tone(0.1), 16000)
    time.sleep(0.3)  # the worker is back in XREADGROUP BLOCK, which Redis ends with "UNBLOCKED" on a delete
    client.delete(settings.stream)
    time.sleep(0.2)
    assert thread.is_alive()
    assert remote.perceive(tone(0.1), 16000).model == "level-test@1"
    assert wait_for(lambda: worker.served == 2)


def test_a_worker_outlives_a_redis_restart(tmp_path) -> None:
    import subprocess

    import redis

    from tests.conftest import free_port

    port = free_port()

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )
        c = redis.Redis(port=port)
        assert wait_for(lambda: _pings(c)), "redis-server did not start"
        return proc

    server = start_redis()
    client = redis.Redis(port=port)
    settings = PerceptionQueueSettings(stream="restart", job_timeout_s=5, reclaim_idle_s=0.4, block_ms=100)
    worker = PerceptionWorker(LevelPerceiver(), client, settings.model_copy(update={"consumer": "w"}))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        remote = RemotePerceiver(redis.Redis(port=port), settings)
        remote.perceive(tone(0.1), 16000)
        server.terminate()
        server.wait(10)
        time.sleep(0.5)  # the worker meets a closed port
        assert thread.is_alive()
        server = start_redis()  # empty: no stream, no group
        assert remote.perceive(tone(0.1), 16000).model == "level-test@1"
        assert wait_for(lambda: worker.served == 2)
    finally:
        worker.stop()
        thread.join(10)
        server.terminate()
        server.wait(10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
