"""Incremental sentence splitting of streamed reply text, so each sentence reaches TTS as soon as it is whole.

    splitter = SentenceSplitter()
    for delta in reply:                 # "Hello Mr. Sm", "ith. It is 3.5 deg", "rees... or so. Bye"
        for sentence in splitter.push(delta):
            speak(sentence)             # "Hello Mr. Smith.", "It is 3.5 degrees... or so."
    rest = splitter.finish()            # "Bye"

A boundary is ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets) followed by whitespace, or a
line break. A boundary is only decided once the next non-space character has arrived, because that character
settles it: a lowercase letter after ``...`` or ``.`` continues the sentence ("Well... maybe", "e.g. this").
Titles (Mr., Dr., ...), single initials ("J. Smith") and numbers ("3.5", "No. 5") never end a sentence.
Very long sentences are cut at a comma or space after ``max_chars`` so speech starts in time.

With ``first_clause_chars`` (the voice loop's ``EMO_VOICE__FIRST_CLAUSE_CHARS``), the reply's *first*
piece may also end at a clause break (``,``, ``;``, ``:`` or a dash, then a space) once it is at least that
long: speech then starts after "I'm sorry to hear that you're feeling this way," instead of after the whole
first sentence, and the rest follows sentence by sentence as before.
"""

from __future__ import annotations

import re

# Abbreviations after which a period does not end a sentence (compared lowercase, without the period).
ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e",
        "cf", "approx", "dept", "est", "fig", "gen", "gov", "lt", "col", "sgt", "capt", "rev", "hon",
        "inc", "ltd", "co", "corp", "no", "vol", "ch", "p", "pp", "a.m", "p.m", "u.s", "jan", "feb",
        "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip
# Abbreviations that may still end a sentence when a capitalised word follows ("... and so on, etc. Then").
_MAY_END = frozenset({"etc", "inc", "ltd", "co", "corp", "a.m", "p.m", "u.s"})

_TERMINATORS = ".!?…"
# A clause break: ",", ";", ":" or a dash, then whitespace and the start of the next word.
_CLAUSE_BREAK = re.compile(r"([,;:]|\s[—–-])\s+(?=\S)")
_CLOSERS = "\"'”’)]}»"


class SentenceSplitter:
    """Feed text pieces with :meth:`push`; get complete sentences back; :meth:`finish` returns the rest."""

    def __init__(self, max_chars: int = 250, first_clause_chars: int = 0) -> None:
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self._buf = ""
        self._emitted = False

    def push(self, delta: str) -> list[str]:
        """Add streamed text; return the sentences it completed (stripped, non-empty), in order."""
        self._buf += delta
        sentences: list[str] = []
        while True:
            cut = self._find_boundary()
            if not self._emitted and self.first_clause_chars > 0:
                clause = self._find_first_clause()
                if clause is not None and (cut is None or clause < cut):
                    cut = clause
            if cut is None:
                cut = self._find_forced_cut()
            if cut is None:
                break
            sentence, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if sentence:
                sentences.append(sentence)
                self._emitted = True
        return sentences

    def finish(self) -> str | None:
        """The text after the last boundary (``None`` when nothing is left); the splitter is then empty
        and ready for another reply."""
        rest, self._buf, self._emitted = self._buf.strip(), "", False
        return rest or None

    def _find_first_clause(self) -> int | None:
        """End of the first clause break at or after ``first_clause_chars`` whose next word has begun."""
        for match in _CLAUSE_BREAK.finditer(self._buf, max(0, self.first_clause_chars - 1)):
            return match.end(1)
        return None

    def _find_boundary(self) -> int | None:
        buf = self._buf
        i = 0
        n = len(buf)
        while i < n:
            ch = buf[i]
            if ch == "\n":
                if buf[:i].strip():
                    return i + 1
                i += 1
                continue
            if ch not in _TERMINATORS:
                i += 1
                continue
            # Extend over a run of terminators and closing quotes/brackets: "?!", "...", '."'.
            end = i + 1
            while end < n and (buf[end] in _TERMINATORS or buf[end] in _CLOSERS):
                end += 1
            if end >= n or not buf[end].isspace():
                if end >= n:
                    return None  # undecided until more text arrives
                i = end  # "3.5", "e.g.x", "...and": not a boundary
                continue
            nxt = end
            while nxt < n and buf[nxt].isspace() and buf[nxt] != "\n":
                nxt += 1
            if nxt >= n:
                return None  # next character not known yet
            if buf[nxt] == "\n" or self._is_boundary(buf[:end], buf[nxt]):
                return end
            i = end
        return None

    @staticmethod
    def _is_boundary(before: str, next_char: str) -> bool:
        punct = before.rstrip(_CLOSERS)
        if not punct.endswith(".") or punct.endswith(".."):
            # "!", "?", "…", "...": a boundary unless the sentence plainly continues in lowercase.
            return not next_char.islower()
        if next_char.islower():
            return False  # "e.g. this", "approx. five"
        word = punct[:-1].split()[-1] if punct[:-1].split() else ""
        word = word.lstrip("\"'“‘([{«").lower()
        if len(word) == 1 and word.isalpha():
            return False  # an initial: "J. Smith"
        if word in ABBREVIATIONS:
            return word in _MAY_END and next_char.isupper() and word not in {"no"}
        if next_char.isdigit() and word.isdigit():
            return False  # "chapter 3. 4 ..." is rare; a list "1. 2." is not a sentence
        return True

    def _find_forced_cut(self) -> int | None:
        if len(self._buf) <= self.max_chars:
            return None
        window = self._buf[: self.max_chars]
        for sep in (", ", "; ", ": ", " "):
            pos = window.rfind(sep)
            if pos > self.max_chars // 2:
                return pos + len(sep)
        return self.max_chars
