"""The fixed text format of emotion reasoning targets, and a parser that survives malformed generations.

Format (one item per line; label first so a truncated generation still carries it, evidence before the
prose so the prose is conditioned on what was cited)::

    label: angry
    cue: pitch_mean +1.80 raised pitch
    quote: "hate" | word usually signalling anger
    reasoning: The speaker sounds angry, with raised pitch ...

:func:`parse_generation` never raises: a missing or unknown label gives ``label=None`` and a problem note,
unparseable evidence lines are dropped (and noted), extra text is ignored, a cut-off reasoning is kept
and flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from perception.types import LABELS, Evidence, canonical_label

_LABEL_LINE = re.compile(r"^\s*(?:label|emotion)\s*[:=]\s*(.*)$", re.IGNORECASE)
_CUE_LINE = re.compile(r"^\s*cue\s*[:=]\s*([a-z_]+)\s+([+-]?\d+(?:\.\d+)?)\s+(.+?)\s*$", re.IGNORECASE)
_QUOTE_LINE = re.compile(r'^\s*quote\s*[:=]\s*"([^"]+)"\s*(?:\|\s*(.*?))?\s*$', re.IGNORECASE)
_REASONING_LINE = re.compile(r"^\s*reasoning\s*[:=]\s*(.*)$", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+")


def format_reasoning_target(label: str, evidence: list[Evidence], reasoning: str) -> str:
    """The training target of the ``emotion_reasoning`` task."""
    lines = [f"label: {label}"]
    for item in evidence:
        if item.kind == "acoustic":
            lines.append(f"cue: {item.cue} {item.value:+.2f} {item.claim}")
        else:
            lines.append(f'quote: "{item.quote}" | {item.claim}')
    lines.append(f"reasoning: {' '.join(reasoning.split())}")
    return "\n".join(lines)


@dataclass
class ParsedGeneration:
    """What could be read from one generation. ``problems`` lists what was wrong (empty when clean)."""

    raw: str
    label: str | None = None
    reasoning: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.label is not None and not self.problems


def _read_label(value: str, labels: tuple[str, ...]) -> str | None:
    for word in _WORD.findall(value.lower()):
        label = canonical_label(word)
        if label in labels:
            return label
    return None


def parse_generation(text: str, labels: tuple[str, ...] | list[str] = LABELS) -> ParsedGeneration:
    """Read label, evidence and reasoning from generated text in the format above (or a bare label)."""
    labels = tuple(labels)
    out = ParsedGeneration(raw=text)
    label_seen = False
    reasoning_lines: list[str] = []
    in_reasoning = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if m := _LABEL_LINE.match(line):
            in_reasoning = False
            if label_seen:
                continue  # a repeated label line: the first one counts
            label_seen = True
            out.label = _read_label(m.group(1), labels)
            if out.label is None:
                out.problems.append(f"unknown label {m.group(1).strip()[:40]!r}")
        elif m := _CUE_LINE.match(line):
            in_reasoning = False
            out.evidence.append(
                Evidence(kind="acoustic", cue=m.group(1), value=float(m.group(2)), claim=m.group(3))
            )
        elif m := _QUOTE_LINE.match(line):
            in_reasoning = False
            out.evidence.append(
                Evidence(kind="lexical", quote=m.group(1), claim=m.group(2) or "quoted words")
            )
        elif m := _REASONING_LINE.match(line):
            in_reasoning = True
            reasoning_lines.append(m.group(1).strip())
        elif in_reasoning:
            reasoning_lines.append(line.strip())  # reasoning wrapped onto further lines
        elif re.match(r"^\s*(cue|quote)\s*[:=]", line, re.IGNORECASE):
            out.problems.append(f"unparseable evidence line {line.strip()[:60]!r}")
    if not label_seen:
        # A bare answer ("Angry.") or prose: the first word naming a label, if any.
        out.label = _read_label(text, labels)
        if out.label is None:
            out.problems.append("no label")
    out.reasoning = " ".join(r for r in reasoning_lines if r).strip()
    if out.reasoning and _cut_off(out.reasoning):
        out.truncated = True
        out.problems.append("reasoning cut off")
    return out


def _cut_off(reasoning: str) -> bool:
    """Prose that stops mid-sentence: no closing punctuation, a parenthesis left open, or a number cut at
    its decimal point (``"(shimmer z=-1."``)."""
    if not reasoning.endswith((".", "!", "?", ")", '"')):
        return True
    return reasoning.count("(") > reasoning.count(")") or bool(re.search(r"\d\.$", reasoning))
