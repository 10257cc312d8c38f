"""Soak of the voice server on loopback, with a Redis restart in the middle.

    python -m bench.soak [--sessions 16] [--turns 1000] [--outage-s 5] [--out bench/results/soak.json]

A real ``emo-agent serve`` (default models) on a redis-server of the benchmark's own (append-only file on,
so what Redis had survives its restart). ``--sessions`` websocket sessions run at once and together send
``--turns`` typed turns, each waiting for its reply: the speaker turns of held-out EmpatheticDialogues
conversations (the validation split by conversation), each session its own conversations. When half the
turns are answered Redis is stopped for ``--outage-s`` seconds, then started again; the sessions go on
throughout.

Counted: turns sent, answered (``assistant.done``), failed (an ``error``), warnings; then, with the
server stopped (SIGTERM, which drains and flushes), each session's trajectory log and dialogue history in
Redis: a turn is lost when its user record, its assistant record or its history entry is missing.
Leakage: any event a session received, or any record or history entry stored under its id, that carries
another session's words. Memory: the server's RSS after start-up, every 100 turns, and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.server import REPO, rss_mb, served
from dialogue.reply_data import is_validation, read_conversations

ED = REPO.parent / "shared" / "data" / "empathetic-dialogues"


class Redis:
    """A redis-server on ``port`` keeping an append-only file in ``folder``."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return done.stdout.strip()

    def start(self) -> None:
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", str(self.folder), "--daemonize", "yes"],
            check=True, capture_output=True,
        )  # fmt: skip
        self._wait(up=True)

    def stop(self) -> None:
        self.cli("shutdown", "nosave")  # the append-only file has every write up to the last second
        self._wait(up=False)

    def _wait(self, up: bool) -> None:
        for _ in range(200):
            if (self.cli("ping") == "PONG") == up:
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not {'start' if up else 'stop'}")


def session_scripts(sessions: int, turns: int) -> list[list[str]]:
    """Each session's typed turns: speaker turns of its own held-out conversations, ``turns`` in all."""
    conversations = [c for cid, c in sorted(read_conversations(ED).items()) if is_validation(cid)]
    scripts: list[list[str]] = [[] for _ in range(sessions)]
    per = [turns // sessions + (1 if i < turns % sessions else 0) for i in range(sessions)]
    it = iter(conversations)
    for i in range(sessions):
        while len(scripts[i]) < per[i]:
            for row in next(it):
                text = " ".join(row["text"].replace("_comma_", ",").split())
                if row["speaker"] == "speaker" and len(text) > 3 and len(scripts[i]) < per[i]:
                    scripts[i].append(text)
    return scripts


async def run_session(url: str, script: list[str], progress: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"sent": 0, "answered": 0, "errors": [], "warnings": [], "seen": [], "replies": []}
    async with connect(url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "session.start", "consent": True}))
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "session.started":
                out["session_id"] = event["session_id"]
                break
        for text in script:
            await ws.send(json.dumps({"type": "input.text", "text": text}))
            out["sent"] += 1
            while True:
                frame = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(frame, bytes):
                    continue
                event = json.loads(frame)
                kind = event["type"]
                if kind == "user.perception":
                    out["seen"].append(event.get("transcript", ""))
                elif kind == "assistant.text":
                    out["replies"].append(event.get("text", ""))
                elif kind == "warning":
                    out["warnings"].append(event.get("code"))
                elif kind == "error":
                    out["errors"].append(event.get("code"))
                    break
                elif kind == "assistant.done":
                    out["answered"] += 1
                    break
            progress["done"] += 1
            progress["tick"].set()
        await ws.send(json.dumps({"type": "session.end"}))
    return out


async def drive(
    url: str, scripts: list[list[str]], redis: Redis, outage_s: float, pid: int
) -> dict[str, Any]:
    total = sum(len(s) for s in scripts)
    progress: dict[str, Any] = {"done": 0, "tick": asyncio.Event()}
    rss: list[dict[str, float]] = [{"turns": 0, **rss_mb(pid)}]
    outage: dict[str, Any] = {}

    async def watch() -> None:
        next_sample = 100
        while progress["done"] < total:
            await progress["tick"].wait()
            progress["tick"].clear()
            done = progress["done"]
            if done >= next_sample:
                rss.append({"turns": done, **rss_mb(pid)})
                print(f"  {done}/{total} turns, RSS {rss[-1]['VmRSS']:.0f} MB", flush=True)
                next_sample += 100
            if not outage and done >= total // 2:
                outage["at_turn"] = done
                await asyncio.to_thread(redis.stop)
                print(f"  Redis stopped at turn {done}", flush=True)
                await asyncio.sleep(outage_s)
                outage["turns_during"] = progress["done"] - done
                await asyncio.to_thread(redis.start)
                print(f"  Redis started again ({outage['turns_during']} turns while it was down)", flush=True)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    results = await asyncio.gather(*(run_session(url, s, progress) for s in scripts))
    elapsed = time.perf_counter() - started
    watcher.cancel()
    rss.append({"turns": progress["done"], **rss_mb(pid)})
    return {"sessions": results, "rss": rss, "outage": outage, "elapsed_s": elapsed}


async def stored(redis_url: str, session_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The session's trajectory records and dialogue history as Redis holds them."""
    import redis.asyncio as aioredis
    from langgraph_checkpoint_plainredis import AsyncRedisSaver

    from agent.trajectory import TrajectoryLog
    from dialogue.engine import KEY_PREFIX, DialogueEngine
    from dialogue.graph import build_graph

    client = aioredis.Redis.from_url(redis_url)
    try:
        records = [r.model_dump() for r in await TrajectoryLog(client).read(session_id)]
        engine = DialogueEngine(build_graph(AsyncRedisSaver(client=client, prefix=KEY_PREFIX)), None)  # type: ignore[arg-type]
        history = await engine.history(session_id)
    finally:
        await client.aclose()
    return records, history


def check(result: dict[str, Any], scripts: list[list[str]], redis_url: str) -> dict[str, Any]:
    lost = failed = leaks = 0
    for mine, script in zip(result["sessions"], scripts, strict=True):
        others = {t for s in scripts if s is not script for t in s} - set(script)
        records, history = asyncio.run(stored(redis_url, mine["session_id"]))
        user = [r["transcript"] for r in records if r["speaker"] == "user"]
        assistant = [r for r in records if r["speaker"] == "assistant"]
        said = [t["user_text"] for t in history]
        failed += len(mine["errors"])
        lost += sum(1 for text in script if text not in user or text not in said)
        lost += max(0, len(user) - len(assistant))
        seen = set(mine["seen"]) | set(user) | set(said)
        leaks += len(seen & others)
        mine.update(stored_user=len(user), stored_assistant=len(assistant), history=len(history))
    return {"lost_turns": lost, "failed_turns": failed, "leaks": leaks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--redis-port", type=int, default=6397)
    parser.add_argument("--env", action="append", default=[], help="K=V for the server (repeatable)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        sys.exit("the soak needs redis-server (apt-get install redis-server)")
    scripts = session_scripts(args.sessions, args.turns)
    with tempfile.TemporaryDirectory() as folder:
        redis = Redis(args.redis_port, Path(folder))
        redis.start()
        try:
            env = {"EMO_VOICE__MAX_SESSIONS_PER_CLIENT": str(max(16, args.sessions))}
            env.update(item.split("=", 1) for item in args.env)
            with served(args.port, redis.url, env=env) as server:
                print(f"server up in {server.startup_s:.1f} s; {args.sessions} sessions, {args.turns} turns")
                result = asyncio.run(drive(server.ws_url, scripts, redis, args.outage_s, server.pid))
            report = check(result, scripts, redis.url)
        finally:
            redis.stop()
    sessions = result["sessions"]
    report.update(
        env=args.env,
        sessions=args.sessions,
        turns_sent=sum(s["sent"] for s in sessions),
        turns_answered=sum(s["answered"] for s in sessions),
        warnings=sorted({w for s in sessions for w in s["warnings"]}),
        outage=result["outage"],
        elapsed_s=round(result["elapsed_s"], 1),
        turns_per_s=round(sum(s["sent"] for s in sessions) / result["elapsed_s"], 2),
        rss_mb=[{"turns": r["turns"], "rss": round(r["VmRSS"], 1)} for r in result["rss"]],
        per_session=[{k: s[k] for k in ("sent", "answered", "stored_user", "history")} for s in sessions],
    )
    start, end = report["rss_mb"][0]["rss"], report["rss_mb"][-1]["rss"]
    print(
        f"soak: {report['sessions']} sessions, {report['turns_sent']} turns sent, {report['turns_answered']} "
        f"answered, {report['failed_turns']} failed, {report['lost_turns']} lost, {report['leaks']} leaked; "
        f"Redis down at turn {report['outage'].get('at_turn')} for {args.outage_s:.0f} s "
        f"({report['outage'].get('turns_during')} turns meanwhile); RSS {start:.0f} -> {end:.0f} MB; "
        f"{report['elapsed_s']:.0f} s ({report['turns_per_s']} turns/s)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0 if report["lost_turns"] == 0 and report["leaks"] == 0 and report["failed_turns"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
