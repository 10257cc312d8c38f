"""When the reply guard forbids cheerful words, read from the conditioning line alone."""

import pytest

from dialogue.reply_format import conditioning_line
from dialogue.reply_guard import conditioning_fields, needs_gentleness


def test_the_fields_of_a_conditioning_line_are_read_back() -> None:
    line = conditioning_line("empathize", "sad", -0.62, -0.3) + "\nAn extension's instruction: be brief."
    assert conditioning_fields(line) == {
        "policy": "empathize",
        "feeling": "sad",
        "valence": "-0.6",
        "arousal": "-0.3",
    }


@pytest.mark.parametrize(
    ("policy", "label", "valence", "gentle"),
    [
        ("empathize", "happy", 0.6, True),  # the policy answers an upset turn
        ("de_escalate", "neutral", 0.3, True),
        ("encourage", "sad", 0.3, True),  # an upset feeling under any policy
        ("neutral", "fear", 0.0, True),
        ("neutral", "neutral", 0.1, True),  # calm and barely positive: may be about something sad
        ("neutral", "neutral", -0.4, True),
        ("encourage", "happy", 0.2, False),
        ("neutral", "neutral", 0.5, False),
        ("encourage", None, None, False),  # nothing perceived: the policy alone decides
    ],
)
def test_cheerful_words_wait_for_a_clearly_positive_turn(policy, label, valence, gentle) -> None:
    arousal = None if valence is None else 0.0
    assert needs_gentleness(conditioning_line(policy, label, valence, arousal)) is gentle


def test_a_line_without_fields_is_not_gentle() -> None:
    assert not needs_gentleness("You are a kind assistant.")
    assert not needs_gentleness("policy: neutral; valence: high")
