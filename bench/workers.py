"""Perception workers on the Redis Streams queue: throughput with 1 and 2 workers, reclaim time after a
kill, and the latency the queue adds to a turn against in-process perception.

    flock /tmp/bench.lock python -m bench.workers [--turns 48] [--sessions 4] [--worker-threads 1]

Needs a Redis at ``EMO_REDIS_URL`` and CREMA-D beside the repository. Real ``emo-agent worker`` processes
(the configured estimator, by default the product's AudioLLM, each with ``--worker-threads`` CPU threads)
serve a stream of this run's own; the turns are CREMA-D clips of the actors the shipped models never heard,
each session a conversation with its speaker baseline.

* throughput: ``--sessions`` conversations at once, ``--turns`` turns in all, with one worker and then with
  two (the same run, the same clips): turns per second of wall time;
* added latency: one conversation, one turn at a time, through one idle worker and then in this process with
  the same perceiver settings and thread budget; the queue's own cost per turn is also measured directly as
  the caller's wait minus the worker's perception time (serialising the audio and baseline, Redis, the
  worker waking up);
* reclaim: a ~10 s turn is sent to two workers, the one holding it is killed with SIGKILL and the time until
  its result arrives from the other is measured (``reclaim_idle_s`` at the product's default unless given),
  ``--kills`` times.

Prints a table and writes ``bench/results/workers.json``, with the machine's load average.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _thread_budget(argv: list[str]) -> int:
    """``--worker-threads`` (default 1), read before numpy loads so this process's in-process turns run
    with the same OpenMP/BLAS pools as a worker's (`emo-agent worker` sets them before loading too)."""
    for i, arg in enumerate(argv):
        if arg == "--worker-threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--worker-threads="):
            return int(arg.split("=", 1)[1])
    return 1


for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(_thread_budget(sys.argv[1:])))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from perception.config import PerceptionQueueSettings, PerceptionSettings  # noqa: E402
from perception.streams import RemotePerceiver  # noqa: E402
from perception.streams.jobs import Job  # noqa: E402

CREMA_D = REPO.parent / "shared" / "data" / "crema-d"
TRAINING = REPO / "perception" / "assets" / "audiollm" / "training.json"


def clips(n: int) -> list[np.ndarray]:
    """``n`` clips spread over the actors the shipped AudioLLM was not trained on."""
    held_out = set(json.loads(TRAINING.read_text())["held_out_speakers"])
    with open(CREMA_D / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["actor"] in held_out]
    rows = sorted(rows, key=lambda r: r["path"])[:: max(1, len(rows) // n)][:n]
    out = []
    for row in rows:
        audio, rate = sf.read(CREMA_D / row["path"], dtype="float32")
        assert rate == 16000 and audio.ndim == 1
        out.append(audio)
    return out


class Workers:
    """``emo-agent worker`` processes serving this run's stream."""

    def __init__(self, client, queue: PerceptionQueueSettings, env: dict[str, str], log_dir: Path) -> None:
        self.client, self.queue, self.env, self.log_dir = client, queue, env, log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> float:
        """Start ``name`` and wait until it has joined the group; returns its start-up time (s)."""
        started = time.monotonic()
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 (the process owns it)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "agent", "worker", "--name", name],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while name.encode() not in self.consumers():
            if self.procs[name].poll() is not None:
                raise SystemExit(f"worker {name} exited:\n{(self.log_dir / f'{name}.log').read_text()}")
            time.sleep(0.1)
        return time.monotonic() - started

    def consumers(self) -> set[bytes]:
        try:
            return {c["name"] for c in self.client.xinfo_consumers(self.queue.stream, self.queue.group)}
        except Exception:
            return set()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(60)

    def kill(self, name: str) -> float:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
        # the consumer stays in the group with its pending job; a restarted worker gets a fresh name
        return killed

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def conversation(remote: RemotePerceiver, turns: list[np.ndarray], out: list[dict]) -> None:
    baseline = remote.new_baseline()
    for audio in turns:
        started = time.perf_counter()
        job = remote._job("audio", baseline, audio=audio, sample_rate=16000)
        result = remote.run(job)
        baseline.turns += 1
        baseline.load_state(result.baseline)
        out.append(
            {
                "wall_ms": (time.perf_counter() - started) * 1000,
                "perceive_ms": result.perceive_ms,
                "queued_ms": result.queued_ms,
                "worker": result.worker,
            }
        )


def throughput(remote: RemotePerceiver, audio: list[np.ndarray], sessions: int) -> dict:
    per_session = [audio[i::sessions] for i in range(sessions)]
    rows: list[dict] = []
    threads = [threading.Thread(target=conversation, args=(remote, turns, rows)) for turns in per_session]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "turns": len(rows),
        "wall_s": round(wall, 2),
        "turns_per_s": round(len(rows) / wall, 3),
        "turn_wall_ms_p50": round(statistics.median(r["wall_ms"] for r in rows), 1),
        "perceive_ms_p50": round(statistics.median(r["perceive_ms"] for r in rows), 1),
        "by_worker": {w: sum(r["worker"] == w for r in rows) for w in sorted({r["worker"] for r in rows})},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=48, help="turns per throughput phase")
    parser.add_argument("--sessions", type=int, default=4, help="conversations at once")
    parser.add_argument("--latency-turns", type=int, default=16)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument(
        "--worker-threads", type=int, default=1, help="EMO_PERCEPTION__CPU_THREADS per worker"
    )
    parser.add_argument("--reclaim-idle-s", type=float, default=None, help="default: the product's")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "workers.json")
    args = parser.parse_args()

    import redis

    from agent.config import Settings
    from agent.worker import limit_threads

    limit_threads(args.worker_threads)  # the in-process turns below run with the workers' thread budget
    settings = Settings()
    url = settings.perception_queue.redis_url or settings.redis_url
    client = redis.Redis.from_url(url)
    client.ping()
    defaults = PerceptionQueueSettings()
    queue = PerceptionQueueSettings(
        stream=f"bench-workers-{uuid.uuid4().hex[:8]}",
        job_timeout_s=300,
        reclaim_idle_s=args.reclaim_idle_s if args.reclaim_idle_s is not None else defaults.reclaim_idle_s,
    )
    perception = settings.perception.model_copy(update={"cpu_threads": args.worker_threads})
    env = {
        **os.environ,
        "EMO_REDIS_URL": url,
        "EMO_PERCEPTION__CPU_THREADS": str(args.worker_threads),
        "EMO_PERCEPTION_QUEUE__STREAM": queue.stream,
        "EMO_PERCEPTION_QUEUE__RECLAIM_IDLE_S": str(queue.reclaim_idle_s),
        "EMO_PERCEPTION_QUEUE__JOB_TIMEOUT_S": str(queue.job_timeout_s),
        "PYTHONUNBUFFERED": "1",
    }
    log_dir = args.out.parent / "workers-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = Workers(client, queue, env, log_dir)
    remote = RemotePerceiver(client, queue)
    audio = clips(args.turns)
    report: dict = {
        "estimator": perception.estimator,
        "worker_cpu_threads": args.worker_threads,
        "sessions": args.sessions,
        "reclaim_idle_s": queue.reclaim_idle_s,
        "block_ms": queue.block_ms,
        "clip_s_mean": round(float(np.mean([len(a) / 16000 for a in audio])), 2),
    }
    try:
        report["worker_startup_s"] = round(workers.start("w1"), 1)
        conversation(remote, audio[:2], [])  # warm the path
        one = throughput(remote, audio, args.sessions)
        print(f"1 worker : {one['turns_per_s']:.2f} turns/s ({one['turns']} turns in {one['wall_s']} s)")
        workers.start("w2")
        conversation(remote, audio[:2], [])
        two = throughput(remote, audio, args.sessions)
        print(f"2 workers: {two['turns_per_s']:.2f} turns/s ({two['turns']} turns in {two['wall_s']} s)")
        report["throughput"] = {
            "1": one,
            "2": two,
            "speed_up": round(two["turns_per_s"] / one["turns_per_s"], 2),
        }

        # -- added latency: one conversation through one idle worker, then in this process --------------
        workers.stop("w2")
        sample = audio[: args.latency_turns]
        queued: list[dict] = []
        conversation(remote, sample, queued)
        from perception.registry import build_perceiver

        local = build_perceiver(PerceptionSettings(**perception.model_dump()))
        baseline = local.new_baseline()
        local_ms = []
        for turn in sample:
            started = time.perf_counter()
            local.perceive(turn, 16000, baseline)
            local_ms.append((time.perf_counter() - started) * 1000)
        del local
        queue_wall = statistics.median(r["wall_ms"] for r in queued)
        overhead = statistics.median(r["wall_ms"] - r["perceive_ms"] for r in queued)
        report["latency"] = {
            "turns": len(sample),
            "queue_turn_ms_p50": round(queue_wall, 1),
            "in_process_turn_ms_p50": round(statistics.median(local_ms), 1),
            "added_ms_p50": round(queue_wall - statistics.median(local_ms), 1),
            "queue_overhead_ms_p50": round(overhead, 1),
            "queue_overhead_ms_max": round(max(r["wall_ms"] - r["perceive_ms"] for r in queued), 1),
        }
        lat = report["latency"]
        print(
            f"latency  : queue {lat['queue_turn_ms_p50']:.0f} ms, in-process"
            f" {lat['in_process_turn_ms_p50']:.0f} ms per turn (p50);"
            f" the queue's own cost {lat['queue_overhead_ms_p50']:.1f} ms"
        )

        # -- reclaim after a kill ------------------------------------------------------------------------
        long_turn = np.concatenate(audio[:4])
        kills = []
        names = iter(f"k{i}" for i in range(100))
        alive = ["w1"]
        for _ in range(args.kills):
            while len(alive) < 2:
                name = next(names)
                workers.start(name)
                alive.append(name)
            job = Job(
                uuid.uuid4().hex,
                "audio",
                int(queue.job_timeout_s * 1000),
                "reclaim",
                1,
                audio=long_turn,
                baseline={},
            )
            results: list = []
            caller = threading.Thread(target=lambda j=job, out=results: out.append(remote.run(j)))
            caller.start()
            holder = None
            while holder is None:
                pending = client.xpending_range(queue.stream, queue.group, min="-", max="+", count=1)
                holder = pending[0]["consumer"].decode() if pending else None
                time.sleep(0.005)
            time.sleep(0.2)
            killed = workers.kill(holder)
            alive.remove(holder)
            caller.join()
            arrived = time.monotonic()
            result = results[0]
            kills.append(
                {
                    "kill_to_result_s": round(arrived - killed, 2),
                    "kill_to_reclaimed_start_s": round(arrived - killed - result.perceive_ms / 1000, 2),
                    "perceive_ms": result.perceive_ms,
                    "deliveries": result.deliveries,
                    "served_by": result.worker,
                }
            )
            print(
                f"reclaim  : result {kills[-1]['kill_to_result_s']} s after the kill"
                f" (perception {result.perceive_ms:.0f} ms)"
            )
        report["reclaim"] = {
            "turn_s": round(len(long_turn) / 16000, 1),
            "kills": kills,
            "kill_to_result_s_median": statistics.median(k["kill_to_result_s"] for k in kills),
            "kill_to_reclaimed_start_s_median": statistics.median(
                k["kill_to_reclaimed_start_s"] for k in kills
            ),
        }
    finally:
        workers.stop_all()
        for key in client.scan_iter(match=f"{queue.stream}*"):
            client.delete(key)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    t, r = report["throughput"], report["reclaim"]
    rows = [
        ("turns per second, 1 worker", f"{t['1']['turns_per_s']:.2f}"),
        (
            "turns per second, 2 workers",
            f"{t['2']['turns_per_s']:.2f} ({t['speed_up']}x; {t['2']['by_worker']})",
        ),
        (
            f"reclaim after SIGKILL (median of {len(kills)})",
            f"result {r['kill_to_result_s_median']} s after the kill; the other worker started on it after"
            f" {r['kill_to_reclaimed_start_s_median']} s",
        ),
        (
            "added latency per turn, queue vs in-process (p50)",
            f"{lat['added_ms_p50']:+.0f} ms; the queue's own cost {lat['queue_overhead_ms_p50']:.1f} ms",
        ),
    ]
    print()
    print("| figure | value |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
