"""Response policies: how the assistant answers, given how the user sounds now and over the session.

A policy bundles what the LLM is told (``instruction``), how long the reply may be, how TTS should say it
(:class:`dialogue.events.Prosody`) and whether it ends with a follow-up question.

The table with every policy and its selection rule is in ``docs/dialogue.md``. Built in: ``safety``
(crisis language; fixed text, see :mod:`dialogue.safety`), ``de_escalate``, ``empathize``, ``encourage``,
``neutral``. Extensions add policies with selection :class:`Rule` s (see ``docs/extending.md``).

:func:`choose_policy` is pure (no I/O, no model): the same perception and history always give the same
policy, which is what the tests pin down. Policies live in the :data:`POLICIES` registry; products that add
their own call :func:`register_policy` (and route to it from their own chooser).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dialogue.events import Prosody
from dialogue.safety import SAFETY_POLICY, SAFETY_PROSODY, is_crisis
from dialogue.state import EmotionTurn, PerceptionSummary


@dataclass(frozen=True)
class Policy:
    """One way of answering."""

    name: str
    instruction: str
    """Told to the LLM in the system prompt (short: small models follow short orders best)."""
    max_sentences: int
    max_new_tokens: int
    prosody: Prosody
    follow_up: bool
    """Whether the reply should end with one short question that invites the user to go on."""


POLICIES: dict[str, Policy] = {}


def register_policy(policy: Policy) -> None:
    """Add or replace a policy in the registry. The ``safety`` policy cannot be replaced."""
    if policy.name == SAFETY_POLICY and SAFETY_POLICY in POLICIES:
        raise ValueError("the safety policy is fixed and cannot be replaced")
    POLICIES[policy.name] = policy


for _policy in (
    Policy(
        name="de_escalate",
        instruction=(
            "The user is upset or agitated. Stay calm and steady. Acknowledge how they feel without "
            "blaming anyone, and suggest one small, concrete next step. Do not argue."
        ),
        max_sentences=2,
        max_new_tokens=40,
        prosody=Prosody(length_scale=1.15, noise_scale=0.5, noise_w=0.6, volume=0.9),
        follow_up=False,
    ),
    Policy(
        name="empathize",
        instruction=(
            "The user sounds sad or worried. Gently name the feeling you hear and show that you care. "
            "Do not give a list of advice."
        ),
        max_sentences=2,
        max_new_tokens=50,
        prosody=Prosody(length_scale=1.1, noise_scale=0.6, noise_w=0.7, volume=0.95),
        follow_up=True,
    ),
    Policy(
        name="encourage",
        instruction=(
            "The user sounds better or positive. Warmly notice what is going well and encourage them to "
            "keep going."
        ),
        max_sentences=2,
        max_new_tokens=50,
        prosody=Prosody(length_scale=0.95, noise_scale=0.7, noise_w=0.85, volume=1.0),
        follow_up=True,
    ),
    Policy(
        name=SAFETY_POLICY,
        instruction="(not generated: the fixed text in dialogue.safety.SAFETY_REPLY is said)",
        max_sentences=6,
        max_new_tokens=0,
        prosody=SAFETY_PROSODY,
        follow_up=True,
    ),
    Policy(
        name="neutral",
        instruction="Answer helpfully, plainly and briefly.",
        max_sentences=3,
        max_new_tokens=60,
        prosody=Prosody(),
        follow_up=False,
    ),
):
    register_policy(_policy)

DEFAULT_POLICY = "neutral"

# Thresholds on the contract's [-1, 1] valence/arousal scales.
NEGATIVE = -0.25  # valence at or below: a clearly negative turn
POSITIVE = 0.25
AGITATED = 0.4  # arousal at or above: high energy
CALM = 0.0  # arousal below: low energy
CONFIDENT = 0.4  # a label counts when the estimator gives it at least this probability
RISE = 0.3  # arousal increase over the recent mean that counts as "rising"
RECOVERY = 0.4  # valence increase over the recent mean that counts as "recovering"
WINDOW = 3  # earlier turns the trajectory rules look at


def _recent(history: Sequence[EmotionTurn]) -> list[EmotionTurn]:
    """The last :data:`WINDOW` earlier turns that carry a perception."""
    measured = [t for t in history if t.get("valence") is not None and t.get("arousal") is not None]
    return measured[-WINDOW:]


RuleTest = Callable[[PerceptionSummary | None, Sequence[EmotionTurn]], bool]
BUILTIN_PRIORITY = 100
"""Extension rules with a priority at or above this run before the built-in rules; lower ones only when the
built-in rules would answer ``neutral``. Nothing runs before the safety check."""


@dataclass(frozen=True)
class Rule:
    """Select ``policy`` when ``when(perception, earlier_turns)`` is true. Rules are pure functions."""

    policy: str
    when: RuleTest
    priority: int = BUILTIN_PRIORITY
    """Higher runs first; see :data:`BUILTIN_PRIORITY`."""


def choose_policy(
    perception: PerceptionSummary | None,
    history: Sequence[EmotionTurn],
    text: str = "",
    rules: Sequence[Rule] = (),
) -> str:
    """Pick a policy name from what was said (only for the safety check), the current perception and the
    earlier turns (current turn excluded), with optional extension ``rules``.

    Order: crisis language in ``text`` → ``safety`` (always first); extension rules with priority >=
    :data:`BUILTIN_PRIORITY`, highest first; the built-in rules; if those give ``neutral``, the remaining
    extension rules. The user's words never select any other policy.
    """
    if text and is_crisis(text):
        return SAFETY_POLICY
    ordered = sorted(rules, key=lambda rule: -rule.priority)
    for rule in ordered:
        if rule.priority >= BUILTIN_PRIORITY and rule.policy in POLICIES and rule.when(perception, history):
            return rule.policy
    name = builtin_policy(perception, history)
    if name != DEFAULT_POLICY:
        return name
    for rule in ordered:
        if rule.priority < BUILTIN_PRIORITY and rule.policy in POLICIES and rule.when(perception, history):
            return rule.policy
    return name


def builtin_policy(perception: PerceptionSummary | None, history: Sequence[EmotionTurn]) -> str:
    """The built-in emotional rules, first match wins:

    1. de_escalate: a confident angry/disgust label with arousal >= 0 (or any turn with valence <= -0.25
       and arousal >= 0.4); or the last two earlier turns and this one all negative while arousal is not
       calm; or arousal risen by >= 0.3 over the recent mean on a non-positive turn.
    2. empathize: a confident sad/fear label, or valence <= -0.25.
    3. encourage: a recent turn was negative and valence now sits >= 0.4 above the recent mean and is not
       negative (recovery); or a confident happy label / valence >= 0.25.
    4. neutral.

    Without a perception (a typed turn) only the trajectory speaks: the last earlier turn's valence and
    arousal stand in, so a typed message in an angry conversation is still answered calmly.
    """
    recent = _recent(history)
    if perception is None:
        if not recent:
            return DEFAULT_POLICY
        last = recent[-1]
        perception = PerceptionSummary(
            label=last.get("label") or "neutral",
            scores={},
            valence=float(last["valence"] or 0.0),
            arousal=float(last["arousal"] or 0.0),
        )
        recent = recent[:-1]

    label = perception["label"]
    confidence = perception["scores"].get(label, 1.0 if not perception["scores"] else 0.0)
    confident = confidence >= CONFIDENT
    valence, arousal = perception["valence"], perception["arousal"]
    past_valence = [float(t["valence"]) for t in recent]  # type: ignore[arg-type]
    past_arousal = [float(t["arousal"]) for t in recent]  # type: ignore[arg-type]

    hostile = confident and label in ("angry", "disgust") and arousal >= CALM
    agitated_negative = valence <= NEGATIVE and arousal >= AGITATED
    sustained_negative = (
        len(past_valence) >= 2 and all(v <= NEGATIVE for v in past_valence[-2:]) and valence <= NEGATIVE
    )
    rising = bool(past_arousal) and arousal - sum(past_arousal) / len(past_arousal) >= RISE
    if hostile or agitated_negative or (sustained_negative and arousal >= CALM) or (rising and valence <= 0):
        return "de_escalate"

    if (confident and label in ("sad", "fear")) or valence <= NEGATIVE:
        return "empathize"

    recovering = (
        bool(past_valence)
        and min(past_valence) <= NEGATIVE
        and valence > NEGATIVE
        and valence - sum(past_valence) / len(past_valence) >= RECOVERY
    )
    if recovering or (confident and label == "happy") or valence >= POSITIVE:
        return "encourage"
    return DEFAULT_POLICY


def get_policy(name: str) -> Policy:
    """The registered policy called ``name``, or the default one for unknown names."""
    return POLICIES.get(name, POLICIES[DEFAULT_POLICY])
