"""Pictures of an emotional trajectory: valence and arousal over a session's turns.

One point per user turn; a strip under the curves colours each turn by its emotion label; the policy the
assistant chose for that turn is marked above the curves (``x`` when the reply was interrupted).
``emo-agent plot --session ID --out FILE.png`` draws it.
"""

from __future__ import annotations

from pathlib import Path

from agent.trajectory import TurnRecord
from perception.types import LABELS

LABEL_COLOURS: dict[str, str] = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#f2b705",
    "neutral": "#7f7f7f",
    "sad": "#1f77b4",
}
POLICY_MARKERS: dict[str, str] = {
    "empathize": "o",
    "de_escalate": "v",
    "encourage": "^",
    "neutral": "s",
    "safety": "X",
}


def user_turns(records: list[TurnRecord]) -> list[TurnRecord]:
    return [r for r in records if r.speaker == "user" and r.valence is not None]


def plot_trajectory(records: list[TurnRecord], out: Path, title: str | None = None) -> Path:
    """Draw the session's trajectory to ``out`` (PNG, SVG or PDF by suffix). Returns ``out``."""
    import matplotlib.pyplot as plt

    fig = trajectory_figure(records, title)
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def trajectory_figure(records: list[TurnRecord], title: str | None = None):  # -> matplotlib Figure
    """The figure: axes[0] holds the lines ``valence`` and ``arousal``, one point per user turn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    users = user_turns(records)
    replies = {r.turn_id: r for r in records if r.speaker == "assistant"}
    xs = list(range(1, len(users) + 1))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(xs) + 3), 4.2), constrained_layout=True)
    ax.axhline(0, color="#cccccc", lw=0.8)
    ax.plot(xs, [u.valence for u in users], "-o", color="#2a9d8f", label="valence", ms=5)
    ax.plot(xs, [u.arousal for u in users], "-o", color="#e76f51", label="arousal", ms=5)
    # label strip
    for x, u in zip(xs, users, strict=True):
        ax.add_patch(
            plt.Rectangle(
                (x - 0.5, -1.3),
                1.0,
                0.14,
                facecolor=LABEL_COLOURS.get(u.label or "", "#dddddd"),
                edgecolor="white",
                lw=1.5,
            )
        )
    # policy markers
    for x, u in zip(xs, users, strict=True):
        reply = replies.get(u.turn_id)
        if reply is None or not reply.policy:
            continue
        marker = "x" if reply.interrupted else POLICY_MARKERS.get(reply.policy, "D")
        ax.scatter([x], [1.12], marker=marker, color="#264653", s=40, clip_on=False)
    ax.set_xlim(0.5, max(1, len(xs)) + 0.5)
    ax.set_ylim(-1.3, 1.2)
    ax.set_xticks(xs)
    ax.set_xlabel("user turn")
    ax.set_ylabel("valence / arousal  (−1 … +1)")
    ax.set_yticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    ax.set_title(title or (f"session {users[0].session_id}" if users else "empty session"))
    used_labels = [lab for lab in LABELS if any(u.label == lab for u in users)]
    used_policies = sorted(
        {replies[u.turn_id].policy for u in users if u.turn_id in replies and replies[u.turn_id].policy}
    )
    interrupted = any(replies[u.turn_id].interrupted for u in users if u.turn_id in replies)

    def heading(text: str):  # a legend row with no symbol, in bold: the name of the group below it
        return plt.Line2D([], [], ls="", label=r"$\bf{" + text.replace(" ", r"\ ") + "}$")

    handles = ax.get_legend_handles_labels()[0]
    handles += [heading("emotion heard")]
    handles += [Patch(facecolor=LABEL_COLOURS[lab], label=lab) for lab in used_labels]
    if used_policies:
        handles += [heading("reply policy")]
        handles += [
            plt.Line2D([], [], ls="", marker=POLICY_MARKERS.get(p, "D"), color="#264653", label=p)
            for p in used_policies
        ]
    if interrupted:
        handles += [plt.Line2D([], [], ls="", marker="x", color="#264653", label="interrupted")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig
