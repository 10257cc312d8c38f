"""How a reply is asked of the empathetic reply model: one short conditioning line, the same at training and
at run time.

The model (fine-tuned from SmolLM2-135M-Instruct on EmpatheticDialogues, ``docs/dialogue.md``) sees a system
message with the chosen policy and how the user sounds, then the recent exchanges as user/assistant turns:

    policy: empathize; feeling: sad; valence: -0.6; arousal: -0.3

It is a line of fields, not instructions, so there is no prose for a small model to recite back, and the
fields are what the policy table and the perception decide. A typed turn says ``feeling: unknown``.
Policies the model was not trained on (extensions) add their own instruction after the line.
"""

from __future__ import annotations

from dialogue.prompts import _FEELINGS  # how a label is said, shared with the prose prompts
from dialogue.state import PerceptionSummary

TRAINED_POLICIES = ("de_escalate", "empathize", "encourage", "neutral")


def conditioning_line(policy: str, label: str | None, valence: float | None, arousal: float | None) -> str:
    """The system line for one reply (``label`` ``None``: a typed turn, no perception)."""
    feeling = _FEELINGS.get(label or "", "unknown")
    line = f"policy: {policy}; feeling: {feeling}"
    if feeling != "unknown" and valence is not None and arousal is not None:
        line += f"; valence: {_signed(valence)}; arousal: {_signed(arousal)}"
    return line


def _signed(x: float) -> str:
    return f"{round(float(x), 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def reply_system_prompt(policy: str, perception: PerceptionSummary | None, instruction: str = "") -> str:
    """The system message the reply model sees at run time."""
    if perception is None:
        line = conditioning_line(policy, None, None, None)
    else:
        line = conditioning_line(policy, perception["label"], perception["valence"], perception["arousal"])
    if policy not in TRAINED_POLICIES and instruction:
        line += "\n" + instruction.strip()
    return line
