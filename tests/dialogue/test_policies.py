"""choose_policy: every policy reachable; the trajectory, not only the current turn, decides."""

from __future__ import annotations

import pytest

from dialogue.events import Prosody
from dialogue.policies import DEFAULT_POLICY, POLICIES, Policy, choose_policy, get_policy
from dialogue.state import EmotionTurn

from .conftest import summary


def turn(i: int, valence: float, arousal: float, label: str = "neutral", policy: str = "") -> EmotionTurn:
    return EmotionTurn(turn_id=f"t{i}", label=label, valence=valence, arousal=arousal, policy=policy)


def test_table_has_the_required_policies_with_limits() -> None:
    for name in ("empathize", "de_escalate", "encourage", "neutral"):
        policy = POLICIES[name]
        assert policy.name == name and policy.instruction
        assert 1 <= policy.max_sentences <= 3
        assert 0 < policy.max_new_tokens <= 60
        assert isinstance(policy.prosody, Prosody)
    assert POLICIES["de_escalate"].prosody.length_scale > 1.0  # calmer: slower
    assert get_policy("no-such-policy").name == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("current", "history", "expected"),
    [
        (summary("angry", -0.7, 0.8), [], "de_escalate"),
        (summary("disgust", -0.5, 0.1), [], "de_escalate"),
        (summary("sad", -0.6, -0.3), [], "empathize"),
        (summary("fear", -0.4, 0.2), [], "empathize"),
        (summary("happy", 0.7, 0.4), [], "encourage"),
        (summary("neutral", 0.0, 0.0), [], "neutral"),
        (None, [], "neutral"),
    ],
)
def test_current_perception_alone(current, history, expected) -> None:
    assert choose_policy(current, history) == expected


def test_sustained_negative_valence_de_escalates() -> None:
    current = summary("sad", -0.5, 0.1)
    assert choose_policy(current, []) == "empathize"
    assert choose_policy(current, [turn(1, -0.6, 0.2, "sad"), turn(2, -0.5, 0.1, "sad")]) == "de_escalate"


def test_rising_arousal_de_escalates() -> None:
    current = summary("neutral", -0.1, 0.5, confidence=0.5)
    calm = [turn(1, 0.0, -0.2), turn(2, 0.0, -0.1)]
    assert choose_policy(current, []) == "neutral"
    assert choose_policy(current, calm) == "de_escalate"


def test_recovery_from_negative_encourages() -> None:
    current = summary("neutral", 0.1, 0.0)
    assert choose_policy(current, []) == "neutral"
    assert choose_policy(current, [turn(1, -0.7, 0.1, "sad"), turn(2, -0.5, 0.0, "sad")]) == "encourage"


def test_low_arousal_sadness_stays_empathic_over_time() -> None:
    current = summary("sad", -0.5, -0.4)
    history = [turn(1, -0.6, -0.3, "sad"), turn(2, -0.5, -0.3, "sad")]
    assert choose_policy(current, history) == "empathize"


def test_typed_turn_follows_the_trajectory() -> None:
    assert choose_policy(None, [turn(1, -0.7, 0.8, "angry")]) == "de_escalate"
    assert choose_policy(None, [turn(1, 0.6, 0.3, "happy")]) == "encourage"


def test_turns_without_perception_are_ignored_by_the_trajectory() -> None:
    typed = EmotionTurn(turn_id="t0", label=None, valence=None, arousal=None, policy="neutral")
    assert choose_policy(summary("neutral", 0.0, 0.0), [typed, typed]) == "neutral"


def test_choose_policy_is_pure() -> None:
    current = summary("sad", -0.5, 0.1)
    history = [turn(1, -0.6, 0.2, "sad"), turn(2, -0.5, 0.1, "sad")]
    frozen = [dict(t) for t in history]
    results = {choose_policy(current, history) for _ in range(5)}
    assert len(results) == 1
    assert [dict(t) for t in history] == frozen


def test_registry_accepts_new_policies() -> None:
    from dialogue.policies import register_policy

    custom = Policy("calm_breathing", "Guide one slow breath.", 1, 30, Prosody(length_scale=1.3), False)
    register_policy(custom)
    try:
        assert get_policy("calm_breathing") is custom
    finally:
        POLICIES.pop("calm_breathing")
