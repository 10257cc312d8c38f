"""The AudioLLM's reasoning for a turn, citing only evidence that verifies against it.

Owns :func:`grounded_reasoning`: every evidence item the LM wrote is checked with
:func:`perception.grounding.verify_item` against the turn's transcript and cue z-scores and unverified
items are dropped; when nothing written survives (or nothing was written: ``reasoning_tokens`` 0, the
default), the reasoning is the cue template's over the measured cues
(:func:`perception.reasoning.build_reasoning`). Also :class:`GenerationStats`, the tally of what the LM's
own writing contributed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from perception.audiollm.parsing import ParsedGeneration
from perception.grounding import verify_item
from perception.reasoning import LABEL_DISPLAY, build_reasoning
from perception.types import Evidence

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """What the LM's own writing contributed since the perceiver started (``reasoning_tokens`` > 0):
    turns it wrote for, evidence items it wrote and how many of them verified, and turns whose reasoning
    is the model's text as written (every item verified, the prose complete and about the label)."""

    turns: int = 0
    items: int = 0
    verified: int = 0
    as_written: int = 0
    tokens: int = 0
    generate_ms: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {
            "turns": self.turns,
            "items": self.items,
            "verified": self.verified,
            "verified_share": round(self.verified / self.items, 4) if self.items else 0.0,
            "as_written": self.as_written,
            "ms_per_token": round(self.generate_ms / self.tokens, 1) if self.tokens else 0.0,
        }


def grounded_reasoning(
    parsed: ParsedGeneration,
    label: str,
    scores: dict[str, float],
    cue_z: dict[str, float],
    transcript: str,
    reference: str,
    stats: GenerationStats | None = None,
) -> tuple[str, list[Evidence]]:
    """Reasoning text and evidence that cite only what verifies for this turn.

    All items verified, the prose present, complete and about the reported label: the generation as is.
    Some verified: the verified items, with a sentence built from them (the prose may lean on a dropped
    item). None: :func:`build_reasoning` over the measured cues and the transcript. ``stats``, when the LM
    wrote (``reasoning_tokens`` > 0), counts this turn.
    """
    kept = [e for e in parsed.evidence if verify_item(e, transcript, cue_z)]
    complete = parsed.ok and bool(parsed.reasoning) and parsed.label == label
    as_written = bool(kept) and len(kept) == len(parsed.evidence) and complete
    if stats is not None:
        stats.turns += 1
        stats.items += len(parsed.evidence)
        stats.verified += len(kept)
        stats.as_written += int(as_written)
    if as_written:
        return parsed.reasoning, kept
    if kept:
        return sentence_from(kept, label, scores.get(label, 0.0), reference), kept
    if parsed.evidence:
        log.debug("no generated evidence verified (%d items); rebuilding from cues", len(parsed.evidence))
    fallback = build_reasoning(label, scores, cue_z, transcript, reference=reference)
    return fallback.text, fallback.evidence


def sentence_from(items: list[Evidence], label: str, p: float, reference: str) -> str:
    """One sentence over verified items: the label and its probability, the cues, the quoted words."""
    cues = [f"{e.claim} ({e.cue} z={e.value:+.1f})" for e in items if e.kind == "acoustic"]
    quotes = [f'"{e.quote}" ({e.claim})' for e in items if e.kind == "lexical"]
    shown = LABEL_DISPLAY.get(label, label)
    parts = [f"The speaker sounds {shown} ({p:.0%})"]
    if cues:
        parts.append(f", with {', '.join(cues)} relative to {reference}")
    text = "".join(parts) + "."
    if quotes:
        text += f" The words include {', '.join(quotes)}."
    return text
