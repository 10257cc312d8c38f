"""ReplyShaper: junk removed, limits kept, streamed pieces always add up to the final reply."""

from __future__ import annotations

import random

import pytest

from dialogue.text import ReplyShaper, shape_reply


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("Hello there. How are you?", 3, "Hello there. How are you?"),
        ("Assistant: Hello there.", 3, "Hello there."),
        ("assistant\nHello there.", 3, "Hello there."),
        ("Hi! I am fine.<|im_end|>\n<|im_start|>user\nmore", 3, "Hi! I am fine."),
        ("One. Two. Three. Four.", 2, "One. Two."),
        ("Sure thing.\nUser: now say something else", 3, "Sure thing."),
        ("  Spaces   and\nnewlines  here.  ", 3, "Spaces and newlines here."),
        ("Wait...\n\nSecond paragraph", 3, "Wait..."),
        ('I said "stop." Then I left.', 1, 'I said "stop."'),
        ("", 2, ""),
    ],
)
def test_shape_reply(raw: str, limit: int, expected: str) -> None:
    assert shape_reply(raw, limit) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "Assistant: I hear you. That sounds hard. Tell me more.<|im_end|>junk",
        "I'm so sorry.\nUser: thanks\nAssistant: welcome",
        "It's okay… really! Let's breathe < slowly > together.",
        "AI: Okay.",
        "Emotions matter. Emo is here.",
    ],
)
def test_streamed_pieces_concatenate_to_the_final_text(raw: str) -> None:
    rng = random.Random(0)
    for _ in range(30):
        shaper = ReplyShaper(max_sentences=2)
        released, position = "", 0
        while position < len(raw):
            step = rng.randint(1, 5)
            released += shaper.feed(raw[position : position + step])
            position += step
        released += shaper.finish()
        assert released == shaper.text == shape_reply(raw, 2)


def test_done_once_the_sentence_limit_is_reached() -> None:
    shaper = ReplyShaper(max_sentences=1)
    shaper.feed("I hear you.")
    assert not shaper.done  # "you." might still be "you.5" or "you..."
    shaper.feed(" And")
    assert shaper.done and shaper.text == "I hear you."
    assert shaper.feed(" more words.") == ""


def test_role_words_are_held_back_only_while_they_could_be_a_tag() -> None:
    shaper = ReplyShaper(max_sentences=2)
    assert shaper.feed("Assist") == ""
    assert shaper.feed("ant: Hi") == "Hi"
    other = ReplyShaper(max_sentences=2)
    assert other.feed("I") == "I"
