"""End-to-end latency of the voice loop, measured as a user feels it.

Starts ``emo-agent serve`` as a real process, opens one session and speaks N CREMA-D clips into it in
real time (20 ms frames paced by the wall clock, then silence, as a microphone would), letting the VAD end
each turn. For every turn it records, at the client:

    end of user speech -> speech.stopped -> user.perception -> first assistant.delta -> first reply audio byte

End of speech is the wall-clock time the last voiced sample was sent (voiced region found offline with
Silero VAD). Prints p50/p95 per stage, the server's RSS, and writes ``bench/results/latency.json``.

    python -m bench.latency [--turns 8] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
CREMA = REPO.parent / "shared" / "data" / "crema-d"
FRAME = 320  # 20 ms at 16 kHz


def pick_clips(n: int) -> list[Path]:
    with open(CREMA / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    emotions = ["angry", "sad", "happy", "fear", "neutral", "disgust"]
    picked: list[Path] = []
    for i in range(n):
        emo = emotions[i % len(emotions)]
        cands = [r for r in rows if r["emotion"] == emo and float(r["duration_s"]) > 2.0]
        picked.append(CREMA / cands[(i * 37) % len(cands)]["path"])
    return picked


def speech_end_s(audio: np.ndarray) -> float:
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=True)
    stamps = get_speech_timestamps(audio, model, sampling_rate=16000)
    return (stamps[-1]["end"] / 16000) if stamps else len(audio) / 16000


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, val = line.split(":")
            out[key] = int(val.split()[0]) / 1024
    return out


async def speak_turn(ws, audio: np.ndarray, end_s: float) -> dict:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    marks: dict[str, float] = {}
    heard: dict[str, str] = {}  # what the session said: transcript, label, policy, reply
    done = asyncio.Event()

    async def receive() -> None:
        while True:
            msg = await ws.recv()
            now = time.perf_counter()
            if isinstance(msg, bytes):
                marks.setdefault("first_audio", now)
                continue
            event = json.loads(msg)
            kind = event["type"]
            if kind == "error":
                raise RuntimeError(event)
            marks.setdefault(kind, now)
            if kind == "user.perception":
                heard["transcript"] = event.get("transcript", "")
                heard["label"] = event.get("emotion", {}).get("label", "")
            elif kind == "assistant.text":
                heard["reply"], heard["policy"] = event.get("text", ""), event.get("policy", "")
            if kind == "assistant.done":
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
            if time.perf_counter() - t0 > 120:
                raise TimeoutError("turn did not finish in 120 s")
    finally:
        receiver.cancel()
    end = marks["speech_end"]
    return {
        "end_to_first_audio": marks["first_audio"] - end,
        "vad_end": marks["speech.stopped"] - end,
        "perception": marks["user.perception"] - marks["speech.stopped"],
        "llm_first_text": marks.get("assistant.delta", marks.get("assistant.text", end))
        - marks["user.perception"],
        "tts_first_audio": marks["first_audio"] - marks.get("assistant.delta", marks["user.perception"]),
        **heard,
    }


async def run(args: argparse.Namespace) -> dict:
    port = args.port
    env = {**os.environ, "EMO_REDIS_URL": args.redis}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t_start = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t_start > 300:
                    raise RuntimeError("server did not start") from None
                await asyncio.sleep(0.5)
        startup_s = time.perf_counter() - t_start
        clips = pick_clips(args.turns)
        turns = []
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
            json.loads(await ws.recv())
            for n, path in enumerate(clips, 1):
                audio, _ = sf.read(path, dtype="float32")
                audio = np.concatenate([np.zeros(8000, np.float32), audio])
                result = await speak_turn(ws, audio, speech_end_s(audio))
                result["clip"] = path.name
                turns.append(result)
                print(
                    f"turn {n}: {path.name:28s} end->first audio {result['end_to_first_audio']:.3f} s  "
                    f"[{result.get('label')}/{result.get('policy')}] {result.get('transcript')!r} -> "
                    f"{result.get('reply')!r}",
                    file=sys.stderr,
                )
                await asyncio.sleep(0.5)
        memory = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stages = ["end_to_first_audio", "vad_end", "perception", "llm_first_text", "tts_first_audio"]
    summary = {
        s: {"p50": pct([t[s] for t in turns], 50), "p95": pct([t[s] for t in turns], 95)} for s in stages
    }
    return {
        "turns": turns,
        "summary_s": summary,
        "server_rss_mb": memory,
        "startup_s": startup_s,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--redis", default=os.environ.get("EMO_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "latency.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(f"\n{'stage':22s} {'p50 s':>8s} {'p95 s':>8s}")
    for stage, v in report["summary_s"].items():
        print(f"{stage:22s} {v['p50']:8.3f} {v['p95']:8.3f}")
    print(
        f"server RSS {report['server_rss_mb'].get('VmRSS', 0):.0f} MB "
        f"(peak {report['server_rss_mb'].get('VmHWM', 0):.0f} MB); startup {report['startup_s']:.1f} s"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
