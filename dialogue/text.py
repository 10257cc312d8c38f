"""Turning raw LLM output into the reply the user hears.

Small models sometimes keep writing past their turn (``<|im_end|>``, ``User:``), open with a role tag
(``Assistant:``) or run long. :class:`ReplyShaper` removes that while tokens stream: it only releases text
that can no longer change, so the released pieces always concatenate to exactly :func:`shape_reply` of the
whole output, and it reports when the sentence limit is reached so generation can stop early.
"""

from __future__ import annotations

import re

# Text that ends a reply: chat-template control strings and the start of a new speaker turn.
STOP_MARKERS: tuple[str, ...] = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|",
    "\nuser",
    "\nUser",
    "\nassistant",
    "\nAssistant",
    "\nsystem",
    "\nSystem",
    "\nHuman",
    "\nhuman",
    "\n\n",
)
# Role tags a reply may open with.
_LEADING_ROLE = re.compile(r"^\s*(?:<\|im_start\|>)?\s*(?:assistant|emo|ai|bot)\s*[:\n]\s*", re.IGNORECASE)
_ROLE_WORDS = ("assistant", "emo", "ai", "bot")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and whitespace.
_SENTENCE_MARK = r"[.!?…]+[\"')\]]*"
_SENTENCE_END = re.compile(_SENTENCE_MARK + r"(?=\s)")
_ENDS_SENTENCE = re.compile(_SENTENCE_MARK + r"\s*$")
_LONGEST_MARKER = max(len(m) for m in STOP_MARKERS)


def _cut_at_stop(text: str) -> tuple[str, bool]:
    cut = len(text)
    for marker in STOP_MARKERS:
        at = text.find(marker)
        if at != -1:
            cut = min(cut, at)
    return text[:cut], cut < len(text)


def _limit_sentences(text: str, max_sentences: int) -> tuple[str, bool]:
    for count, match in enumerate(_SENTENCE_END.finditer(text), start=1):
        if count >= max_sentences:
            return text[: match.end()], True
    return text, False


def ends_with_sentence_mark(text: str) -> bool:
    """Whether ``text`` ends at a sentence end (its closing mark written, the next sentence not begun)."""
    return bool(_ENDS_SENTENCE.search(text))


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence, as the reply shaper counts them (all of it if none)."""
    return _limit_sentences(text + " ", 1)[0][: len(text)]


def split_sentences(text: str) -> list[str]:
    """``text``'s sentences, as the reply shaper counts them (the last one may lack its mark)."""
    parts, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        parts.append(text[start : match.end()])
        start = match.end()
    return [p for p in (*parts, text[start:]) if p.strip()]


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def shape_reply(raw: str, max_sentences: int) -> str:
    """The clean reply for a complete raw output."""
    shaper = ReplyShaper(max_sentences)
    shaper.feed(raw)
    shaper.finish()
    return shaper.text


class ReplyShaper:
    """Incremental :func:`shape_reply`: ``feed`` raw pieces, get back the newly releasable clean text."""

    def __init__(self, max_sentences: int) -> None:
        self.max_sentences = max(1, max_sentences)
        self._raw = ""
        self.text = ""
        """Clean text released so far."""
        self.done = False
        """True once the reply is complete (stop marker or sentence limit): further input is ignored."""

    def _clean(self, final: bool) -> tuple[str, bool]:
        body = _LEADING_ROLE.sub("", self._raw, count=1)
        body, stopped = _cut_at_stop(body)
        body, full = _limit_sentences(body, self.max_sentences)
        complete = final or stopped or full
        if not complete:
            # Hold back a tail that may still grow into a stop marker or a role tag at the very start.
            hold = body.rfind("<", max(0, len(body) - _LONGEST_MARKER))
            newline = body.rfind("\n", max(0, len(body) - _LONGEST_MARKER))
            for position in (hold, newline):
                if position != -1:
                    body = body[:position]
            opening = self._raw.lstrip().lower()
            if any(role.startswith(opening) for role in _ROLE_WORDS):
                body = ""  # "Assist" may still become "Assistant:"
        clean = _collapse(body).lstrip()
        # Trailing whitespace is released only together with the word after it.
        return (clean.rstrip() if complete else clean[: len(clean.rstrip())]), complete

    def feed(self, piece: str) -> str:
        """Add raw output; return the clean text released by it (may be empty)."""
        if self.done or not piece:
            return ""
        self._raw += piece
        clean, self.done = self._clean(final=False)
        return self._release(clean)

    def finish(self) -> str:
        """The raw output is complete; release whatever was held back."""
        if not self.done:
            clean, _ = self._clean(final=True)
            self.done = True
            return self._release(clean)
        return ""

    def _release(self, clean: str) -> str:
        if not clean.startswith(self.text):  # cannot happen with the rules above; never un-say text
            return ""
        new, self.text = clean[len(self.text) :], clean
        return new
