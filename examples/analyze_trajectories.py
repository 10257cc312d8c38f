"""Example analysis of exported emotional trajectories.

    emo-agent export --all --format parquet --out turns.parquet
    python examples/analyze_trajectories.py turns.parquet [--plot summary.png]

Prints, per session, how valence moved from the first to the last user turn, how often each emotion was
heard, which policies the assistant chose and how often it was interrupted, and the mean change in
valence on the turn after each policy (did de-escalating help?). Reads JSONL, CSV or Parquet exports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def load(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".csv":
        df = pd.read_csv(path)
    else:
        df = pd.read_json(path, lines=True)
    if "scores" in df and df["scores"].map(lambda v: isinstance(v, str)).any():
        df["scores"] = df["scores"].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    return df.sort_values(["session_id", "t_start"]).reset_index(drop=True)


def policy_effect(df: pd.DataFrame) -> pd.DataFrame:
    """Mean valence change from a user turn to the next, grouped by the policy of the reply in between."""
    users = df[df.speaker == "user"][["session_id", "turn_id", "valence"]].copy()
    users["next_valence"] = users.groupby("session_id")["valence"].shift(-1)
    replies = df[df.speaker == "assistant"][["session_id", "turn_id", "policy"]]
    joined = users.merge(replies, on=["session_id", "turn_id"]).dropna(subset=["next_valence"])
    joined["delta_valence"] = joined["next_valence"] - joined["valence"]
    return joined.groupby("policy")["delta_valence"].agg(["count", "mean"]).round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--plot", type=Path, default=None, help="bar chart of policy effects")
    args = parser.parse_args()
    df = load(args.export)
    users = df[df.speaker == "user"]
    replies = df[df.speaker == "assistant"]
    print(f"{df.session_id.nunique()} sessions, {len(users)} user turns, {len(replies)} replies\n")
    per_session = users.groupby("session_id")["valence"].agg(first="first", last="last", mean="mean")
    print("valence per session\n", per_session.round(2), "\n")
    print("emotions heard\n", users["label"].value_counts().to_string(), "\n")
    print("policies chosen\n", replies["policy"].value_counts().to_string(), "\n")
    print(f"interrupted replies: {int(replies['interrupted'].astype(bool).sum())} of {len(replies)}\n")
    effect = policy_effect(df)
    print("valence change on the next turn, by policy\n", effect.to_string())
    if args.plot is not None and not effect.empty:
        import matplotlib

        matplotlib.use("Agg")
        ax = effect["mean"].plot.bar(title="mean valence change after each policy", rot=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.figure.tight_layout()
        ax.figure.savefig(args.plot, dpi=120)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
