"""Choosing a reply's second sentence: the model's own (greedy) continuation of the first sentence, or a
sampled one, whichever makes the whole reply closer in meaning to what the user said.

The first sentence streams to speech as soon as it is written and the choice is made while it is spoken; on
2 cores the extra generation still competes with speech synthesis for the CPU and delayed the first audio by
about 160 ms (p50), so it is off by default (``EMO_DIALOGUE__REPLY_CANDIDATES=2`` turns it on). Relevance is
the cosine of all-MiniLM-L6-v2 sentence embeddings (:mod:`perception.sentence_embedding`, the plain encoder)
between the user's turn and each whole reply. On held-out EmpatheticDialogues turns this raised the
similarity of replies to the human listener's from 0.270 to 0.292 with one sampled continuation
(``docs/dialogue.md``): a small model's most likely second sentence is often a formula ("I hope you ..."), a
sampled one more often about the user's own words.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from dialogue.text import ends_with_sentence_mark

MIN_FIRST_WORDS = 2

_embedder = None
_embedder_lock = threading.Lock()


def shared_embedder() -> Callable[[list[str]], np.ndarray]:
    """One plain MiniLM embedder per process, loaded on first use."""
    global _embedder
    with _embedder_lock:
        if _embedder is None:
            from perception.sentence_embedding import SentenceEmbedder

            _embedder = SentenceEmbedder(threads=1)
        return _embedder


def ends_first_sentence(text: str) -> bool:
    """Whether ``text`` (the reply so far) is one whole sentence of at least :data:`MIN_FIRST_WORDS` words."""
    return ends_with_sentence_mark(text) and len(text.split()) >= MIN_FIRST_WORDS


def pick_continuation(
    user: str, first: str, continuations: Sequence[str], embed: Callable[[list[str]], np.ndarray]
) -> int:
    """Index of the continuation whose whole reply (``first`` + it) is closest to ``user``; ties go to the
    earliest (the model's own)."""
    if len(continuations) < 2 or not user.strip():
        return 0
    vectors = embed([user] + [first + c for c in continuations])
    relevance = vectors[1:] @ vectors[0]
    return int(np.argmax(relevance))
