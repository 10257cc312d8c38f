"""Folding long histories into a running summary, without an LLM call on the reply path.

The LLM sees the last ``history_turns`` exchanges. Older turns are folded, once each, into
``State.summary``: a short extractive and emotional digest built from the stored history in well under a
millisecond (no model call, so it never delays the first token, and it cannot hallucinate):

    Earlier in this conversation (5 turns): the user sounded sad, then calm; mood improving.
    Topics: "I lost my job" / "my sister called" / "the interview is on Monday".

The mood part is made only from canonical labels and numbers; the topics are the first words of the
user's own earlier sentences, so the summary travels in a user-role message, never in the system prompt
(see :func:`dialogue.nodes.conversation_window`). Only the most recent :data:`MAX_TOPICS` topics are
kept, so the summary stays short however long the session runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import AnyMessage, HumanMessage

from dialogue.state import EmotionTurn

MAX_TOPICS = 6
TOPIC_WORDS = 8
_FEELINGS = {"angry": "angry", "disgust": "disgusted", "fear": "afraid", "happy": "happy", "neutral": "calm",
             "sad": "sad"}  # fmt: skip


def _topic(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    words = first.replace('"', "'").split()
    return " ".join(words[:TOPIC_WORDS]).rstrip(".,;:!?") + (" ..." if len(words) > TOPIC_WORDS else "")


def _mood(turns: Sequence[EmotionTurn]) -> str:
    labels: list[str] = []
    for turn in turns:
        feeling = _FEELINGS.get(turn.get("label") or "")
        if feeling and (not labels or labels[-1] != feeling):
            labels.append(feeling)
    if not labels:
        return ""
    mood = "the user sounded " + ", then ".join(labels[-4:])
    valences = [float(v) for t in turns if (v := t.get("valence")) is not None]
    if len(valences) >= 2 and abs(valences[-1] - valences[0]) >= 0.3:
        mood += "; mood improving" if valences[-1] > valences[0] else "; mood getting worse"
    return mood


def fold(
    turns: Sequence[EmotionTurn], messages: Sequence[AnyMessage], summary_turns: int, keep: int
) -> tuple[str, int] | None:
    """A new ``(summary, summary_turns)`` when turns have left the window of ``keep`` earlier turns, else
    ``None``. ``turns`` excludes the current turn; the summary is rebuilt from the stored history."""
    covered = max(0, len(turns) - max(0, keep))
    if covered <= summary_turns:
        return None
    folded = turns[:covered]
    users = {str(m.id): str(m.content) for m in messages if isinstance(m, HumanMessage)}
    topics = [_topic(users.get(f"{t['turn_id']}:user", "")) for t in folded]
    topics = [t for t in topics if t][-MAX_TOPICS:]
    mood = _mood(folded)
    text = f"Earlier in this conversation ({covered} turns)" + (f": {mood}." if mood else ".")
    if topics:
        text += " Topics: " + " / ".join(f'"{t}"' for t in topics) + "."
    return text, covered
