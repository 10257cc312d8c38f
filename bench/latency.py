"""End-to-end latency of the voice loop, measured as a user feels it, against the sequential pipeline.

Starts ``emo-agent serve`` as a real process per system and speaks CREMA-D clips of the validation actors
(the shipped models' own held-out split) into it in real time: 20 ms frames paced by the wall clock, then
silence, as a microphone would, the VAD ending each turn. For every turn it records, at the client:

    end of user speech -> speech.stopped -> user.perception -> first assistant.delta -> first reply audio

and the server's own per-stage timeline (the turn's ``metrics`` event). End of speech is the wall-clock
time the last voiced sample was sent (the voiced region found offline with Silero VAD). A reply byte that
arrives before the turn's ``speech.stopped`` counts as a reply to an unfinished turn (there must be none).

Systems, each in its own server process, one after the other:

- ``default``: the product's defaults (speculative turns at a 200 ms pause, the reply streamed);
- ``naive``: the sequential reference: no speculation, the whole reply written before TTS speaks it
  (``EMO_VOICE__SPECULATIVE_PAUSE_MS=0 EMO_VOICE__STREAM_REPLY=false EMO_VOICE__FIRST_CLAUSE_CHARS=0``);
- ``nospec``: the defaults without speculation only.

``--sessions K`` adds, for the first system, K concurrent sessions (started a little apart, as real users
are) speaking ``--turns`` clips between them. Prints p50/p95 per stage, the ratio to ``naive``, the
server's RSS, and writes ``bench/results/latency.json``.

    python -m bench.latency [--turns 16] [--systems default,naive] [--sessions 4] [--env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

from bench.server import rss_mb, served

REPO = Path(__file__).resolve().parents[1]
CREMA = REPO.parent / "shared" / "data" / "crema-d"
FRAME = 320  # 20 ms at 16 kHz
EMOTIONS = ["angry", "sad", "happy", "fear", "neutral", "disgust"]
SYSTEMS: dict[str, dict[str, str]] = {
    "default": {},
    "naive": {
        "EMO_VOICE__SPECULATIVE_PAUSE_MS": "0",
        "EMO_VOICE__STREAM_REPLY": "false",
        "EMO_VOICE__FIRST_CLAUSE_CHARS": "0",
    },
    "nospec": {"EMO_VOICE__SPECULATIVE_PAUSE_MS": "0"},
}
# Client-side stages, seconds from the end of the user's speech.
STAGES = ["end_to_first_audio", "vad_end", "perception", "first_text", "first_audio_after_text"]
# The server's timeline (ms since the end of the turn), from the metrics event.
SERVER_STAGES = ["perception", "llm_first_token", "first_sentence", "first_audio_byte", "speculative_lead"]


def pick_clips(n: int, offset: int = 0) -> list[Path]:
    """``n`` clips of the validation actors, emotions in turn, each over 2 s and with speech that Silero
    finds offline (a few CREMA-D clips are too quiet or too clipped for any VAD to start a turn)."""
    from perception.train_classical import validation_actors

    with open(CREMA / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    actors = validation_actors(sorted({r["actor"] for r in rows}))
    rows = [r for r in rows if r["actor"] in actors and float(r["duration_s"]) > 2.0]
    picked: list[Path] = []
    for i in range(offset, offset + n):
        cands = [r for r in rows if r["emotion"] == EMOTIONS[i % len(EMOTIONS)]]
        for k in range(len(cands)):
            path = CREMA / cands[(i * 37 + k) % len(cands)]["path"]
            if path not in picked and speech_end_s(sf.read(path, dtype="float32")[0]) is not None:
                picked.append(path)
                break
    return picked


_VAD: Any = None


def speech_end_s(audio: np.ndarray) -> float | None:
    """Where the last voiced stretch ends (s), by Silero offline; None when it finds no speech."""
    global _VAD
    from silero_vad import get_speech_timestamps, load_silero_vad

    if _VAD is None:
        _VAD = load_silero_vad(onnx=True)
    stamps = get_speech_timestamps(audio, _VAD, sampling_rate=16000, min_speech_duration_ms=300)
    return (stamps[-1]["end"] / 16000) if stamps else None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load_turn(path: Path) -> tuple[np.ndarray, float]:
    audio, rate = sf.read(path, dtype="float32")
    if rate != 16000:
        raise ValueError(f"{path}: {rate} Hz, expected 16 kHz")
    audio = np.concatenate([np.zeros(8000, np.float32), audio])
    end_s = speech_end_s(audio)
    return audio, end_s if end_s is not None else len(audio) / 16000


async def speak_turn(ws, audio: np.ndarray, end_s: float) -> dict[str, Any] | None:
    """Speak one clip in real time, then silence, until the turn's ``metrics`` event arrives; None when
    the VAD did not start a turn at all."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    marks: dict[str, float] = {}
    heard: dict[str, Any] = {"early_reply_bytes": 0}
    done = asyncio.Event()

    async def receive() -> None:
        while True:
            msg = await ws.recv()
            now = time.perf_counter()
            if isinstance(msg, bytes):
                if "speech.stopped" not in marks:
                    heard["early_reply_bytes"] += len(msg)
                marks.setdefault("first_audio", now)
                continue
            event = json.loads(msg)
            kind = event["type"]
            if kind == "error":
                raise RuntimeError(event)
            if kind in ("user.perception", "assistant.delta") and "speech.stopped" not in marks:
                heard["early_reply_bytes"] += len(msg)  # a reply to a turn not yet ended
            marks.setdefault(kind, now)
            if kind == "user.perception":
                heard["transcript"] = event.get("transcript", "")
                heard["label"] = event.get("emotion", {}).get("label", "")
            elif kind == "assistant.text":
                heard["reply"], heard["policy"] = event.get("text", ""), event.get("policy", "")
            elif kind == "metrics":
                heard["server_ms"] = event.get("latency_ms", {})
                heard["perception_ms"] = event.get("perception_ms", {})
                done.set()
                return

    receiver = asyncio.create_task(receive())
    t0 = time.perf_counter()
    i = 0
    end_frame = int(end_s * 16000) // FRAME
    try:
        while not done.is_set():
            frame = pcm[i * FRAME : (i + 1) * FRAME]
            if len(frame) < FRAME:  # the clip is over: the microphone keeps sending silence
                frame = np.zeros(FRAME, "<i2")
            await ws.send(frame.tobytes())
            if i == end_frame:
                marks["speech_end"] = time.perf_counter()
            i += 1
            delay = t0 + i * FRAME / 16000 - time.perf_counter()
            await asyncio.wait([receiver], timeout=max(0.0, delay))
            if receiver.done():
                receiver.result()
            if "speech.started" not in marks and time.perf_counter() - t0 > len(audio) / 16000 + 3:
                return None  # the VAD never heard this clip as speech
            if time.perf_counter() - t0 > 120:
                raise TimeoutError("turn did not finish in 120 s")
    finally:
        receiver.cancel()
    end = marks["speech_end"]
    first_text = marks.get("assistant.delta", marks.get("assistant.text", marks["user.perception"]))
    return {
        "end_to_first_audio": marks["first_audio"] - end,
        "vad_end": marks["speech.stopped"] - end,
        "perception": marks["user.perception"] - end,
        "first_text": first_text - end,
        "first_audio_after_text": marks["first_audio"] - first_text,
        **heard,
    }


async def session(url: str, clips: list[Path], label: str, delay_s: float = 0.0) -> list[dict[str, Any]]:
    """One conversation: the clips spoken in turn, each after the previous reply has been played."""
    await asyncio.sleep(delay_s)
    turns = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000, "consent": False}))
        json.loads(await ws.recv())
        for path in clips:
            audio, end_s = await asyncio.to_thread(load_turn, path)
            result = await speak_turn(ws, audio, end_s)
            if result is None:
                print(f"  {label} {path.name:24s} no turn heard", file=sys.stderr)
                continue
            result["clip"] = path.name
            turns.append(result)
            print(
                f"  {label} {path.name:24s} end->audio {result['end_to_first_audio']:.3f} s  "
                f"[{result.get('label')}/{result.get('policy')}] {result.get('transcript')!r} -> "
                f"{result.get('reply')!r}",
                file=sys.stderr,
            )
            await asyncio.sleep(0.5)
    return turns


def summarize(turns: list[dict[str, Any]]) -> dict[str, Any]:
    client = {
        s: {"p50": pct([t[s] for t in turns], 50), "p95": pct([t[s] for t in turns], 95)} for s in STAGES
    }
    server = {}
    for s in SERVER_STAGES:
        values = [t["server_ms"][s] for t in turns if s in t.get("server_ms", {})]
        server[s] = {"p50": pct(values, 50), "p95": pct(values, 95), "n": len(values)}
    return {
        "turns": len(turns),
        "client_s": client,
        "server_ms": server,
        "early_replies": sum(1 for t in turns if t["early_reply_bytes"]),
    }


async def run_system(name: str, env: dict[str, str], args: argparse.Namespace, sessions: int) -> dict:
    clips = pick_clips(args.turns)
    with served(args.port, args.redis, env) as server:
        idle = rss_mb(server.pid)
        print(
            f"{name}: started in {server.startup_s:.1f} s, RSS {idle.get('VmRSS', 0):.0f} MB", file=sys.stderr
        )
        turns = await session(server.ws_url, clips, name)
        report: dict[str, Any] = {
            "env": env,
            "startup_s": server.startup_s,
            "rss_idle_mb": idle,
            "sequential": {**summarize(turns), "per_turn": turns},
        }
        if sessions > 1:
            share = [clips[i::sessions] for i in range(sessions)]
            runs = await asyncio.gather(
                *(session(server.ws_url, c, f"{name}#{i}", delay_s=0.7 * i) for i, c in enumerate(share))
            )
            flat = [t for r in runs for t in r]
            report["concurrent"] = {"sessions": sessions, **summarize(flat), "per_turn": flat}
        report["rss_after_mb"] = rss_mb(server.pid)
    return report


def print_report(report: dict[str, Any]) -> None:
    systems = report["systems"]
    print(f"\nend of speech -> (s), {report['turns']} turns in real time, VAD-ended")
    header = f"{'system':22s} " + " ".join(f"{s[:18]:>18s}" for s in STAGES) + "  early"
    print(header)
    rows = [(name, "sequential") for name in systems] + [
        (name, "concurrent") for name in systems if "concurrent" in systems[name]
    ]
    for name, part in rows:
        data = systems[name][part]
        label = name if part == "sequential" else f"{name} x{data['sessions']} sessions"
        cells = " ".join(
            f"{data['client_s'][s]['p50']:8.3f}/{data['client_s'][s]['p95']:<9.3f}" for s in STAGES
        )
        print(f"{label:22s} {cells}  {data['early_replies']}")
    print("(p50/p95)")
    print("\nserver timeline, ms since the end of the turn (p50/p95; negative: done before it ended)")
    for name in systems:
        data = systems[name]["sequential"]["server_ms"]
        cells = "  ".join(f"{s} {v['p50']:.0f}/{v['p95']:.0f}" for s, v in data.items() if v["n"])
        print(f"  {name:10s} {cells}")
    for name, data in systems.items():
        rss = data["rss_after_mb"]
        print(
            f"{name}: RSS idle {data['rss_idle_mb'].get('VmRSS', 0):.0f} MB, "
            f"after {rss.get('VmRSS', 0):.0f} MB "
            f"(peak {rss.get('VmHWM', 0):.0f} MB); start-up {data['startup_s']:.1f} s"
        )
    for name, ratio in report.get("ratio_to_naive", {}).items():
        print(
            f"{name}: p50 {ratio['p50']:.2f}x, p95 {ratio['p95']:.2f}x the naive pipeline's end->first audio"
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = dict(kv.split("=", 1) for kv in args.env)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {sorted(SYSTEMS)}")
    systems = {}
    for i, name in enumerate(names):
        env = {**extra, **SYSTEMS[name]}
        systems[name] = await run_system(name, env, args, args.sessions if i == 0 else 1)
    report: dict[str, Any] = {"turns": args.turns, "cpu_count": os.cpu_count(), "systems": systems}
    if "naive" in systems:
        base = systems["naive"]["sequential"]["client_s"]["end_to_first_audio"]
        report["ratio_to_naive"] = {
            name: {
                q: data["sequential"]["client_s"]["end_to_first_audio"][q] / base[q] for q in ("p50", "p95")
            }
            for name, data in systems.items()
            if name != "naive"
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=16)
    parser.add_argument("--systems", default="default,naive", help=f"comma-separated, of {sorted(SYSTEMS)}")
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions (first system); 1: none")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every server (repeatable)")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--redis", default=os.environ.get("EMO_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "latency.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
