"""``emo-agent`` as users run it: a real subprocess, exit codes, one-line errors, real outputs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent.trajectory import TrajectoryLog, TurnRecord, audio_key, stream_key
from perception.types import Perception

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_missing_file_is_a_one_line_error() -> None:
    result = run("perceive", "/no/such/file.wav")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file" in lines[0]
    assert "Traceback" not in result.stderr


def test_not_audio_is_a_one_line_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio")
    result = run("perceive", str(fake))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(fake) in result.stderr.strip().splitlines()[-1]


def test_bad_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\nx.wav,angry\n")
    result = run("eval", "--manifest", str(manifest))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_perceive_json_on_real_speech(crema_dir: Path) -> None:
    result = run("perceive", str(crema_dir / "audio/1012_TIE_SAD_XX.ogg"), "--json")
    assert result.returncode == 0, result.stderr
    perception = Perception.model_validate_json(result.stdout)
    assert perception.transcript
    assert -1 <= perception.emotion.valence <= 1
    assert perception.timings_ms


@pytest.mark.slow
def test_eval_writes_the_contract_report(crema_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run("eval", "--manifest", str(crema_dir / "manifest.csv"), "--limit", "12", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for key in (
        "n",
        "labels",
        "ua",
        "wa",
        "macro_f1",
        "confusion",
        "wer",
        "grounding",
        "skipped",
        "rtf",
        "model",
    ):
        assert key in report
    assert report["n"] == 12
    assert 0 <= report["ua"] <= 1 and 0 <= report["wa"] <= 1
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 12
    assert report["wer"] is not None and report["rtf"] > 0
    assert "ua" in result.stdout.lower()


@pytest.mark.integration
def test_export_round_trip(redis_url: str, tmp_path: Path) -> None:
    import pandas as pd
    import redis.asyncio as aioredis

    session = f"test-export-{uuid.uuid4().hex[:8]}"
    records = [
        TurnRecord(
            session_id=session,
            turn_id="t1",
            speaker="user",
            t_start=1.0,
            t_end=2.5,
            transcript="I can't believe this, again.",
            label="angry",
            scores={"angry": 0.7, "disgust": 0.1, "fear": 0.05, "happy": 0.05, "neutral": 0.05, "sad": 0.05},
            valence=-0.6,
            arousal=0.7,
            reasoning="Loudness well above baseline.",
            evidence=[{"kind": "acoustic", "cue": "loudness_mean", "value": 2.1, "claim": "louder"}],
            model="m@1",
            latency_ms={"asr": 120.0},
        ),
        TurnRecord(
            session_id=session,
            turn_id="t1",
            speaker="assistant",
            t_start=3.0,
            t_end=4.0,
            transcript="That sounds frustrating.",
            policy="de_escalate",
            interrupted=True,
        ),
    ]

    async def write() -> None:
        client = aioredis.Redis.from_url(redis_url)
        log = TrajectoryLog(client)
        for r in records:
            await log.append(r)
        await client.aclose()

    asyncio.run(write())
    env = {"EMO_REDIS_URL": redis_url}

    jsonl = run("export", "--session", session, env=env)
    assert jsonl.returncode == 0, jsonl.stderr
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert rows == [r.row() for r in records]

    csv_out = run("export", "--session", session, "--format", "csv", env=env)
    parsed = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert [r["speaker"] for r in parsed] == ["user", "assistant"]
    assert json.loads(parsed[0]["scores"]) == records[0].scores

    pq = tmp_path / "t.parquet"
    result = run("export", "--session", session, "--format", "parquet", "--out", str(pq), env=env)
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(pq)
    assert list(frame["turn_id"]) == ["t1", "t1"]
    assert frame["interrupted"].tolist() == [False, True]
    assert json.loads(frame["evidence"][0]) == records[0].evidence

    missing = run("export", "--session", "no-such-session-xyz", env=env)
    assert missing.returncode == 2 and "no session" in missing.stderr

    async def clean() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await client.delete(stream_key(session))
        await client.aclose()

    asyncio.run(clean())


@pytest.mark.integration
def test_export_audio_dir_and_ttl(redis_url: str, tmp_path: Path) -> None:
    import redis.asyncio as aioredis
    import soundfile as sf

    session = f"test-audio-{uuid.uuid4().hex[:8]}"
    wav = tmp_path / "in.wav"
    sf.write(wav, [0.1, -0.1] * 800, 16000, subtype="PCM_16")
    user = TurnRecord(session_id=session, turn_id="t1", speaker="user", t_start=1.0, t_end=1.1, label="sad")

    async def write() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        log = TrajectoryLog(client, ttl_s=120)
        user.audio_ref = await log.store_audio(session, "t1", wav.read_bytes())
        await log.append(user)
        ttls = (await client.ttl(stream_key(session)), await client.ttl(user.audio_ref))
        await client.aclose()
        return ttls

    async def clean() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await client.delete(stream_key(session), audio_key(session, "t1"))
        await client.aclose()

    try:
        assert all(0 < ttl <= 120 for ttl in asyncio.run(write()))
        out = tmp_path / "wavs"
        env = {"EMO_REDIS_URL": redis_url}
        result = run("export", "--session", session, "--audio-dir", str(out), env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["audio_ref"] == audio_key(session, "t1")
        assert (out / f"{session}_t1.wav").read_bytes() == wav.read_bytes()
    finally:
        asyncio.run(clean())


def test_usage_errors_are_one_line() -> None:
    result = run("export", "--session", "x", "--format", "xml")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid choice" in result.stderr
    result = run("eval", "--manifest", "m.csv", "--limit", "-3")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_out_into_a_missing_folder_fails_before_any_work(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,emotion\nx.wav,angry\n")
    result = run("eval", "--manifest", str(manifest), "--out", str(tmp_path / "nowhere" / "r.json"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_manifest_rows_with_extra_fields_are_read(tmp_path: Path) -> None:
    from perception.evaluation import read_manifest

    manifest = tmp_path / "m.csv"
    manifest.write_text("path,emotion\na.wav,anger,extra,fields\nb.wav,calm\nc.wav,sadness\n")
    rows, skipped = read_manifest(manifest)
    assert [(r.path.name, r.emotion) for r in rows] == [("a.wav", "angry"), ("c.wav", "sad")]
    assert skipped == {"calm": 1}


@pytest.mark.integration
def test_serve_startup_errors_are_one_line(redis_url: str) -> None:
    result = run(
        "serve",
        "--port",
        "0",
        env={"EMO_REDIS_URL": redis_url, "EMO_PERCEPTION__ESTIMATOR": "no-such-estimator"},
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("emo-agent serve:") and "no-such-estimator" in last
    assert "Traceback" not in result.stderr

    result = run("serve", env={"EMO_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2 and "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_startup_errors_are_one_line(redis_url: str) -> None:
    result = run("worker", env={"EMO_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2 and "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("worker", env={"EMO_REDIS_URL": redis_url, "EMO_PERCEPTION__ESTIMATOR": "no-such-estimator"})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("emo-agent worker:") and "no-such-estimator" in last
    result = run(
        "serve",
        env={
            "EMO_REDIS_URL": redis_url,
            "EMO_PERCEPTION__MODE": "redis-streams",
            "EMO_PERCEPTION_QUEUE__REDIS_URL": "redis://127.0.0.1:1/0",
        },
    )
    assert result.returncode == 2 and "perception queue" in result.stderr.strip().splitlines()[-1]
