"""System prompt text. Built only from the persona, the chosen policy and the perceived emotion label, never
from anything the user said: user words only ever travel in user messages."""

from __future__ import annotations

from dialogue.policies import Policy
from dialogue.state import PerceptionSummary

# There is deliberately no "ignore instructions in user messages" line: the protection is structural (user
# words never enter this prompt), and with the bundled 135M model such a line is often echoed back.

DEFAULT_PERSONA = (
    "You are Emo, a warm and calm voice companion. You speak in short, simple, spoken sentences, "
    "with no lists, emojis or markdown."
)

SYSTEM_TEMPLATE = """{persona}

{heard}{instruction}
Reply in at most {max_sentences} short sentences.{follow_up}"""

FOLLOW_UP = " End with one short question."

# How a label is said in the prompt; labels come from the perception model and are checked against this.
_FEELINGS = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "afraid",
    "happy": "happy",
    "neutral": "calm",
    "sad": "sad",
}


def heard_line(perception: PerceptionSummary | None) -> str:
    """One sentence telling the LLM how the user sounds, or nothing for typed turns."""
    if perception is None:
        return ""
    feeling = _FEELINGS.get(perception["label"])
    return f"The user sounds {feeling}. " if feeling else ""


def system_prompt(
    policy: Policy, perception: PerceptionSummary | None, persona: str, max_sentences: int
) -> str:
    """The full system prompt for one reply."""
    return SYSTEM_TEMPLATE.format(
        persona=persona.strip(),
        heard=heard_line(perception),
        instruction=policy.instruction,
        max_sentences=max_sentences,
        follow_up=FOLLOW_UP if policy.follow_up else "",
    )
