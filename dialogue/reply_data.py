"""EmpatheticDialogues as reply-model training examples.

Each listener turn of a conversation becomes one example: the recent exchanges before it (the ED speaker as
the user, the listener as the assistant, at most :data:`HISTORY_TURNS` earlier turns), the conditioning line
of :mod:`dialogue.reply_format` built from the conversation's emotion (mapped by
:mod:`dialogue.ed_emotions`, valence/arousal jittered so the model reads them as estimates, like the
perception's) and the policy the product's own chooser (:func:`dialogue.policies.choose_policy`) picks
for it, and the listener's words as the target. A share of examples drops the perception (``feeling:
unknown``), as a typed turn has none. Listener turns that mostly repeat the speaker's last turn or an
earlier listener turn (:func:`dialogue.reply_guard.is_copy`) are left out.

The validation split is by conversation (a stable hash of ``conv_id``), never by turn.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dialogue.ed_emotions import map_emotion
from dialogue.policies import choose_policy
from dialogue.reply_format import conditioning_line
from dialogue.reply_guard import is_copy
from dialogue.state import EmotionTurn, PerceptionSummary
from perception.ed_emotions import is_validation

HISTORY_TURNS = 2
TYPED_SHARE = 0.1
JITTER = 0.15


class ReplyDataError(ValueError):
    """The conversations file is missing or not in EmpatheticDialogues' layout."""


@dataclass(frozen=True)
class ReplyExample:
    conv_id: str
    emotion: str  # the ED emotion
    system: str  # the conditioning line
    messages: tuple[tuple[str, str], ...]  # (role, text), oldest first, the last one the user's
    target: str  # the listener's reply
    policy: str


def _clean(text: str) -> str:
    return " ".join(text.replace("_comma_", ",").split())


def read_conversations(path: Path) -> dict[str, list[dict[str, str]]]:
    """``conv_id`` → its utterances in turn order."""
    path = Path(path)
    csv_path = path / "conversations.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise ReplyDataError(f"EmpatheticDialogues conversations not found at {csv_path}")
    conversations: dict[str, list[dict[str, str]]] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"conv_id", "emotion", "turn", "speaker", "text"} - set(reader.fieldnames or [])
        if missing:
            raise ReplyDataError(f"{csv_path} lacks column(s) {', '.join(sorted(missing))}")
        for row in reader:
            conversations.setdefault(row["conv_id"], []).append(row)
    for turns in conversations.values():
        turns.sort(key=lambda r: int(r["turn"]))
    return conversations


def examples(
    conversations: dict[str, list[dict[str, str]]], split: str, seed: int = 0
) -> Iterator[ReplyExample]:
    """The examples of ``split`` ("train" or "validation"), in a seeded order for "train"."""
    rng = random.Random(seed)
    ids = sorted(c for c in conversations if is_validation(c) == (split == "validation"))
    if split == "train":
        rng.shuffle(ids)
    for conv_id in ids:
        turns = conversations[conv_id]
        mapped = map_emotion(turns[0]["emotion"])
        if mapped is None:
            continue
        label, valence, arousal = mapped
        earlier: list[EmotionTurn] = []
        for i, row in enumerate(turns):
            if row["speaker"] != "listener" or i == 0 or turns[i - 1]["speaker"] != "speaker":
                if row["speaker"] == "speaker":
                    earlier.append(
                        EmotionTurn(turn_id=str(i), label=label, valence=valence, arousal=arousal, policy="")
                    )
                continue
            history = turns[max(0, i - HISTORY_TURNS - 1) : i]
            messages = tuple(
                ("user" if h["speaker"] == "speaker" else "assistant", _clean(h["text"])) for h in history
            )
            while messages and messages[0][0] != "user":
                messages = messages[1:]
            target = _clean(row["text"])
            earlier_replies = [t for r, t in messages if r == "assistant"]
            if not messages or is_copy(target, [messages[-1][1], *earlier_replies]):
                continue  # a listener who repeats the speaker (or themselves) is not a model to learn
            typed = rng.random() < TYPED_SHARE
            if typed:
                perception = None
            else:
                v = max(-1.0, min(1.0, valence + rng.uniform(-JITTER, JITTER)))
                a = max(-1.0, min(1.0, arousal + rng.uniform(-JITTER, JITTER)))
                perception = PerceptionSummary(label=label, scores={label: 0.8}, valence=v, arousal=a)
            policy = choose_policy(perception, earlier[:-1], messages[-1][1])
            if policy == "safety":
                continue  # the safety reply is fixed text, never generated
            system = conditioning_line(
                policy,
                None if perception is None else label,
                None if perception is None else perception["valence"],
                None if perception is None else perception["arousal"],
            )
            yield ReplyExample(conv_id, turns[0]["emotion"], system, messages, target, policy)
