"""Trajectory plot, HTML report, EmotionML and CSV/JSONL/Parquet round trips on fixed records."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pandas as pd
import pytest

from agent.emotionml import NS, to_emotionml
from agent.export import ExportError, filter_time, parse_time, write_export
from agent.plots import plot_trajectory, trajectory_figure
from agent.report import render_report
from agent.trajectory import TurnRecord
from perception.types import LABELS


def session(n: int = 4) -> list[TurnRecord]:
    out = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        scores = {lab: (0.5 if lab == label else 0.1) for lab in LABELS}
        out.append(
            TurnRecord(
                session_id="s1",
                turn_id=f"t{i}",
                speaker="user",
                t_start=100.0 + 10 * i,
                t_end=102.0 + 10 * i,
                transcript=f"turn <{i}> & more",
                label=label,
                scores=scores,
                valence=-0.5 + 0.3 * i,
                arousal=0.4 - 0.2 * i,
                reasoning="Louder than usual.",
                evidence=[{"kind": "lexical", "quote": "more", "claim": "says more"}],
                model="m@1",
            )
        )
        out.append(
            TurnRecord(
                session_id="s1",
                turn_id=f"t{i}",
                speaker="assistant",
                t_start=103.0 + 10 * i,
                t_end=105.0 + 10 * i,
                transcript="I hear you.",
                policy="empathize",
                interrupted=(i == 2),
            )
        )
    return out


def test_plot_has_one_point_per_user_turn(tmp_path: Path) -> None:
    records = session(5)
    fig = trajectory_figure(records)
    lines = {
        line.get_label(): line
        for line in fig.axes[0].get_lines()
        if line.get_label() in ("valence", "arousal")
    }
    assert len(lines["valence"].get_xdata()) == 5
    assert list(lines["arousal"].get_ydata()) == [r.arousal for r in records if r.speaker == "user"]
    out = plot_trajectory(records, tmp_path / "t.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_escapes_and_embeds_the_plot() -> None:
    page = render_report(session(2), "s1")
    assert "data:image/png;base64," in page
    assert "turn &lt;1&gt; &amp; more" in page and "<1>" not in page
    assert page.count('class="turn user"') == 2


def test_emotionml_has_one_emotion_per_user_turn() -> None:
    root = ET.fromstring(to_emotionml(session(3)))
    emotions = root.findall(f"{{{NS}}}emotion")
    assert len(emotions) == 3
    first = emotions[0]
    assert first.find(f"{{{NS}}}category").get("name") == "angry"
    dims = {d.get("name"): float(d.get("value")) for d in first.findall(f"{{{NS}}}dimension")}
    assert dims == {"valence": pytest.approx(0.25), "arousal": pytest.approx(0.7)}
    assert first.get("start") == "100000"
    policies = [e.find(f"{{{NS}}}info/{{{NS}}}policy") for e in emotions]
    assert [p.text for p in policies] == ["empathize"] * 3
    assert [p.get("interrupted") for p in policies] == [None, None, "true"]


def test_jsonl_csv_parquet_round_trip(tmp_path: Path) -> None:
    records = session(3)
    rows = [r.row() for r in records]
    write_export(records, "jsonl", tmp_path / "t.jsonl")
    assert (
        pd.read_json(tmp_path / "t.jsonl", lines=True).to_dict("records")[0]["transcript"]
        == rows[0]["transcript"]
    )
    assert [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()] == rows
    write_export(records, "csv", tmp_path / "t.csv")
    frame = pd.read_csv(tmp_path / "t.csv")
    assert len(frame) == 6 and json.loads(frame["scores"][0]) == rows[0]["scores"]
    write_export(records, "parquet", tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["speaker"].tolist() == [r["speaker"] for r in rows]
    assert back["valence"].tolist()[::2] == [r["valence"] for r in rows[::2]]
    with pytest.raises(ExportError):
        write_export(records, "parquet", None)


def test_time_filters() -> None:
    records = session(4)
    kept = filter_time(records, since=110.0, until=125.0)
    assert {r.turn_id for r in kept} == {"t1", "t2"}
    assert parse_time("1970-01-01T00:01:40") == 100.0
    with pytest.raises(ExportError):
        parse_time("yesterday-ish")


def test_example_analysis_runs_on_an_export(tmp_path: Path) -> None:
    import subprocess
    import sys

    write_export(session(4), "parquet", tmp_path / "t.parquet")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            str(repo / "examples" / "analyze_trajectories.py"),
            str(tmp_path / "t.parquet"),
            "--plot",
            str(tmp_path / "effect.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "1 sessions, 4 user turns, 4 replies" in result.stdout
    assert "interrupted replies: 1 of 4" in result.stdout
    assert (tmp_path / "effect.png").exists()
