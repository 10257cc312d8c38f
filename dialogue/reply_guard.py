"""What keeps a reply from copying: word n-gram overlap with the user's turn and the session's earlier
replies, used three ways: to drop copying targets from the reply model's training data, to block copied
n-grams while decoding (:func:`blocked_sequences`), and to measure echo and repeat rates in
``bench/replies.py``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z0-9']+")
# A reply whose word trigrams are at least this share of another text's is "mostly" that text.
COPY_SHARE = 0.5
BLOCK_N = 4  # token n-grams of the user's turns and the system line that decoding may not repeat
REPLY_BLOCK_N = 3  # shorter for earlier replies: "I hope you ..." twice in a session is heard as a formula


# Cheerful words a reply to someone upset must not use ("great", said to a sad person, is not heard as
# kind). Blocked while decoding when :func:`needs_gentleness` says the turn is upset.
UPBEAT_WORDS: tuple[str, ...] = (
    "great", "wonderful", "glad", "fantastic", "awesome", "amazing", "congratulations",
    "happy for you", "good to hear",
)  # fmt: skip
GENTLE_POLICIES: frozenset[str] = frozenset({"empathize", "de_escalate"})
CHEER_VALENCE = 0.2  # cheerful words need a turn at least this positive (when its valence is known)
UPSET_FEELINGS: frozenset[str] = frozenset({"sad", "angry", "afraid", "disgusted"})


def conditioning_fields(system_line: str) -> dict[str, str]:
    """The fields of a :mod:`dialogue.reply_format` conditioning line (its first line)."""
    first = system_line.split("\n", 1)[0]
    fields = (part.split(":", 1) for part in first.split(";") if ":" in part)
    return {key.strip(): value.strip() for key, value in fields}


def needs_gentleness(system_line: str) -> bool:
    """Whether the reply must not cheer: a policy for upset turns, an upset feeling, or a valence below
    :data:`CHEER_VALENCE` (a turn heard as calm or barely happy may still be about something sad)."""
    fields = conditioning_fields(system_line)
    if fields.get("policy") in GENTLE_POLICIES or fields.get("feeling") in UPSET_FEELINGS:
        return True
    try:
        return float(fields.get("valence", "nan")) < CHEER_VALENCE
    except ValueError:
        return False


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def overlap(reply: str, source: str) -> float:
    """Share of the reply's word trigrams (unigrams for replies under three words) found in ``source``."""
    r, s = words(reply), words(source)
    if not r:
        return 0.0
    n = 3 if len(r) >= 3 else 1
    grams = _ngrams(r, n)
    return len(grams & _ngrams(s, n)) / len(grams) if grams else 0.0


def is_copy(reply: str, sources: Iterable[str]) -> bool:
    """Whether the reply is mostly one of ``sources`` (the user's turn, an earlier reply)."""
    return any(overlap(reply, s) >= COPY_SHARE for s in sources if s)


def blocked_sequences(token_lists: Iterable[Sequence[str]], n: int = BLOCK_N) -> list[list[str]]:
    """Every ``n``-token window of the given tokenised texts: sequences the decoder must not produce
    (CTranslate2's ``suppress_sequences``)."""
    seen: set[tuple[str, ...]] = set()
    for tokens in token_lists:
        seen |= _ngrams(list(tokens), n)
    return [list(g) for g in sorted(seen)]
