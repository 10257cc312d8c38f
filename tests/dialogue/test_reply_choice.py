"""Choosing the reply's second sentence by closeness to the user's turn (dialogue.reply_choice)."""

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from dialogue.reply_choice import ends_first_sentence, pick_continuation
from dialogue.reply_format import reply_system_prompt
from dialogue.state import PerceptionSummary
from dialogue.text import first_sentence as one_sentence

VOCAB = ["dog", "walk", "park", "hope", "better", "sorry", "you"]


def bag_of_words(texts: list[str]) -> np.ndarray:
    rows = np.array([[t.lower().count(w) for w in VOCAB] for t in texts], dtype=float) + 1e-3
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_continuation_about_the_users_words_is_chosen() -> None:
    user = "I walk my dog in the park every morning."
    options = [" I hope you feel better.", " Which park do you walk the dog in?"]
    assert pick_continuation(user, "That sounds lovely.", options, bag_of_words) == 1
    assert pick_continuation(user, "That sounds lovely.", options[:1], bag_of_words) == 0
    assert pick_continuation("", "That sounds lovely.", options, bag_of_words) == 0  # nothing to be close to
    same = [" I hope so.", " I hope so."]
    assert pick_continuation(user, "Nice.", same, bag_of_words) == 0  # a tie keeps the model's own


def test_sentences_are_told_apart_for_the_choice() -> None:
    assert ends_first_sentence("Oh no!") and ends_first_sentence("That is sad. ")
    assert not ends_first_sentence("Oh no") and not ends_first_sentence("No.")  # one word is not a sentence
    assert one_sentence(" That's terrible. Did you tell her?") == " That's terrible."
    assert one_sentence(' "Wow." Then more.') == ' "Wow."'
    assert one_sentence(" and then") == " and then"


@pytest.mark.slow
def test_the_first_sentence_is_the_models_own_and_the_stream_adds_up() -> None:
    from dialogue.reply_engine import ReplyChatModel

    sad = PerceptionSummary(label="sad", scores={"sad": 0.9}, valence=-0.7, arousal=-0.3)
    own = ReplyChatModel(max_new_tokens=50, temperature=0.0, candidates=1)
    chosen = own.model_copy(update={"candidates": 3})
    turns = ["I failed my driving test again and my dad was really mad at me.", "My dog died this morning."]
    for text in turns:
        messages = [SystemMessage(reply_system_prompt("empathize", sad)), HumanMessage(text)]
        greedy = "".join(str(c.content) for c in own.stream(messages))
        pieces = [str(c.content) for c in chosen.stream(messages)]
        reply = "".join(pieces)
        first = one_sentence(greedy).strip()
        assert reply.startswith(first)  # streamed before the choice is made: the model's own
        assert "".join(pieces[:-2]).strip() == first or "".join(pieces[:-1]).strip() == first
        second = reply[len(first) :]
        assert second.strip() and one_sentence(second) == second  # one more sentence, chosen whole
        assert "great" not in reply.lower()
