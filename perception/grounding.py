"""Checks every evidence item of a :class:`Perception` against what was actually measured and said.

Owns :func:`verify`, used by evaluation ("grounding" in the eval report) and to filter generated
reasoning. An acoustic item verifies when its cue was measured, its value matches the measurement and
its claim points the same way as the z-score (up claims need z >= +1, down claims z <= -1, "near"
claims |z| < 1). A lexical item verifies when its quote is a verbatim substring of the transcript.
"""

from __future__ import annotations

import re

from perception.acoustics import CLAIM_Z, CUES
from perception.types import Evidence, Perception

# Tolerance between an item's value and the measured z-score (values are reported to 2 decimals).
VALUE_TOLERANCE = 0.05

_UP = re.compile(r"\b(raised|higher|high|louder|faster|more|increased|above|greater|elevated|clearer)\b")
_DOWN = re.compile(
    r"\b(lowered|lower|low|quieter|softer|slower|less|fewer|decreased|below|flatter|rougher)\b"
)
_NEAR = re.compile(r"\b(near|close to|typical|usual|unchanged)\b")


def claim_direction(cue: str, claim: str) -> int | None:
    """+1 (up), -1 (down), 0 (near reference) or ``None`` when the claim says neither."""
    spec = CUES.get(cue)
    text = claim.strip().lower()
    if spec is not None:
        if text == spec.high_claim:
            return 1
        if text == spec.low_claim:
            return -1
    if _NEAR.search(text):
        return 0
    up, down = bool(_UP.search(text)), bool(_DOWN.search(text))
    if up != down:
        return 1 if up else -1
    return None


def verify_item(item: Evidence, transcript: str, cues: dict[str, float]) -> bool:
    if item.kind == "lexical":
        return bool(item.quote) and item.quote in transcript
    if item.cue is None or item.value is None or item.cue not in cues:
        return False
    measured = cues[item.cue]
    if abs(measured - item.value) > VALUE_TOLERANCE:
        return False
    direction = claim_direction(item.cue, item.claim)
    if direction == 1:
        return measured >= CLAIM_Z
    if direction == -1:
        return measured <= -CLAIM_Z
    if direction == 0:
        return abs(measured) < CLAIM_Z
    return False


def verify(perception: Perception, transcript: str, cues: dict[str, float]) -> tuple[int, int]:
    """``(n_claims, n_verified)`` over the perception's evidence; ``cues`` are the measured z-scores."""
    results = [verify_item(item, transcript, cues) for item in perception.evidence]
    return len(results), sum(results)
