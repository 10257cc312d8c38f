"""A dialogue extension: after three turns of falling valence, the assistant checks in on the user.

Load it without editing the package::

    EMO_DIALOGUE__EXTENSIONS='["examples.checkin:register"]' emo-agent serve

or declare it as an entry point of an installed package (group ``emo_agent.dialogue``). It adds

* a policy, ``check_in``: stop and gently ask how the user is really doing (slow, soft prosody, ends with a
  question), and
* a node, ``check_in``, at the ``before_respond`` hook: when the valence of this turn and the two before it
  has fallen turn after turn (by at least :data:`MIN_DROP` in total), it switches the turn's policy to
  ``check_in`` (at most once every :data:`COOLDOWN_TURNS` turns). Crisis language never reaches it: safety
  turns skip the hook.

Run ``python -m examples.checkin`` to play a scripted conversation through the real engine (in-memory
checkpointer, a canned LLM) and print the policy of each turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dialogue.events import Prosody
from dialogue.extensions import Registry
from dialogue.policies import Policy
from dialogue.state import EmotionTurn, State

CHECK_IN = Policy(
    name="check_in",
    instruction=(
        "The user's mood has been sinking over the last few turns. Pause the topic, say kindly that you "
        "noticed, and ask how they are really doing."
    ),
    max_sentences=2,
    max_new_tokens=45,
    prosody=Prosody(length_scale=1.12, noise_scale=0.55, noise_w=0.7, volume=0.92),
    follow_up=True,
)
TURNS = 3  # the current turn and the two before it
MIN_DROP = 0.3  # total valence fall over those turns
COOLDOWN_TURNS = 3  # earlier turns in which a check-in suppresses another one


def falling_valence(valences: Sequence[float]) -> bool:
    """True when the last :data:`TURNS` valences fall strictly, by at least :data:`MIN_DROP` overall."""
    last = list(valences)[-TURNS:]
    return (
        len(last) == TURNS
        and all(b < a for a, b in zip(last, last[1:], strict=False))
        and last[0] - last[-1] >= MIN_DROP
    )


def _should_check_in(history: Sequence[EmotionTurn], current_turn: str) -> bool:
    perceived = [t for t in history if t.get("valence") is not None]
    if not perceived or perceived[-1]["turn_id"] != current_turn:
        return False  # a typed turn: no new evidence
    earlier = [t for t in history if t["turn_id"] != current_turn][-COOLDOWN_TURNS:]
    if any(t.get("policy") == CHECK_IN.name for t in earlier):
        return False
    return falling_valence([float(t["valence"]) for t in perceived])  # type: ignore[arg-type]


async def check_in(state: State) -> dict[str, Any]:
    """``before_respond`` node: switch this turn to ``check_in`` after three turns of falling valence."""
    if not _should_check_in(state.emotional_history, state.turn_id):
        return {}
    entry = EmotionTurn(turn_id=state.turn_id, policy=CHECK_IN.name)
    return {"policy": CHECK_IN.name, "emotional_history": [entry]}


def register(registry: Registry) -> None:
    """The extension's entry point."""
    registry.add_policy(CHECK_IN)
    registry.add_node("check_in", check_in, hook="before_respond")


SCRIPT: list[tuple[str, str, float, float]] = [
    ("The weekend was fine, nothing special.", "neutral", 0.3, 0.0),
    ("Work has been a bit much lately.", "neutral", 0.1, 0.0),
    ("I keep messing things up at work.", "neutral", -0.15, -0.1),
    ("Honestly I don't know why I bother.", "sad", -0.3, -0.2),
]


async def demo() -> list[tuple[str, str]]:
    """Play :data:`SCRIPT` through a :class:`dialogue.engine.DialogueEngine` loading this extension."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langgraph.checkpoint.memory import MemorySaver

    from agent.config import DialogueSettings
    from dialogue.context import DialogueContext
    from dialogue.engine import DialogueEngine
    from dialogue.events import ReplyDone
    from dialogue.extensions import load_extensions
    from dialogue.graph import build_graph
    from perception.types import Emotion, Perception

    settings = DialogueSettings(extensions=["examples.checkin:register"], extension_entry_points=False)
    registry = load_extensions(settings.extensions, use_entry_points=settings.extension_entry_points)
    replies = iter([AIMessage(content="I'm listening. Tell me more.")] * len(SCRIPT))
    context = DialogueContext(llm=GenericFakeChatModel(messages=replies), rules=tuple(registry.rules))
    engine = DialogueEngine(build_graph(MemorySaver(), registry), context)
    rows = []
    for i, (text, label, valence, arousal) in enumerate(SCRIPT):
        emotion = Emotion(label=label, scores={label: 1.0}, valence=valence, arousal=arousal)
        heard = Perception(transcript=text, emotion=emotion, reasoning="scripted", model="demo")
        async for event in engine.reply("demo", f"t{i}", text, heard):
            if isinstance(event, ReplyDone):
                rows.append((text, event.policy))
    await engine.aclose()
    return rows


if __name__ == "__main__":
    import asyncio

    for text, policy in asyncio.run(demo()):
        print(f"{policy:<10} {text}")
