"""A self-contained HTML report of one session: the trajectory plot, then every turn with its transcript,
emotion, reasoning and evidence, and the reply with its policy. ``emo-agent report --session ID``."""

from __future__ import annotations

import base64
import html
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from agent.plots import plot_trajectory
from agent.trajectory import TurnRecord

CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
.turn{border-left:4px solid #ccc;padding:.3rem .8rem;margin:.8rem 0}
.user{border-color:#2a9d8f}.assistant{border-color:#e76f51;background:#fafafa}
.meta{color:#666;font-size:.85em} .ev{font-size:.85em;color:#444} img{max-width:100%}
"""


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _evidence_html(e: dict) -> str:
    what = e.get("cue") if e.get("kind") == "acoustic" else f"“{e.get('quote', '')}”"
    value = "" if e.get("value") is None else f" = {e['value']:+.2f}"
    return f"<li>{html.escape(str(what))}{value} — {html.escape(str(e.get('claim', '')))}</li>"


def _turn_html(r: TurnRecord) -> str:
    esc = html.escape
    parts = [
        f'<div class="turn {r.speaker}"><div class="meta">{_time(r.t_start)} · {r.speaker} · '
        f"turn {esc(r.turn_id)}</div>"
    ]
    if r.speaker == "user":
        parts.append(f"<p>“{esc(r.transcript)}”</p>")
        if r.label:
            top = sorted((r.scores or {}).items(), key=lambda kv: -kv[1])[:3]
            scores = ", ".join(f"{esc(k)} {v:.2f}" for k, v in top)
            parts.append(
                f"<p><b>{esc(r.label)}</b> ({scores}) · valence {r.valence:+.2f} · "
                f"arousal {r.arousal:+.2f}</p>"
            )
        if r.reasoning:
            parts.append(f"<p>{esc(r.reasoning)}</p>")
        if r.evidence:
            items = "".join(_evidence_html(e) for e in r.evidence)
            parts.append(f'<ul class="ev">{items}</ul>')
    else:
        note = " (interrupted: what was heard)" if r.interrupted else ""
        parts.append(f"<p>{esc(r.transcript)}</p><p class=meta>policy <b>{esc(r.policy or '')}</b>{note}</p>")
    parts.append("</div>")
    return "".join(parts)


def render_report(records: list[TurnRecord], session_id: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_trajectory(records, Path(tmp) / "trajectory.png")
        img = base64.b64encode(png.read_bytes()).decode()
    turns = "\n".join(_turn_html(r) for r in records)
    n_user = sum(r.speaker == "user" for r in records)
    first = datetime.fromtimestamp(records[0].t_start, UTC) if records else None
    started = f" · started {first:%Y-%m-%d %H:%M}" if first else ""
    title = f"Emotional trajectory — session {html.escape(session_id)}"
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title><style>{CSS}</style>"
        f"<h1>{title}</h1><p class=meta>{n_user} user turns, {len(records) - n_user} replies · times in UTC"
        f"{started}</p>"
        f'<img alt="valence and arousal over turns" src="data:image/png;base64,{img}">\n{turns}</html>'
    )
