"""Evidence-grounded reasoning text for one perception.

Owns the small emotion lexicon, lexical evidence (words quoted verbatim from the transcript) and the
reasoning sentences. The rule: every sentence is built from evidence items, and the only things cited
are cues measured for this turn (with their z-score) and words that occur in the transcript, so each
claim can be checked by :func:`perception.grounding.verify`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from perception.acoustics import CLAIM_Z, CUES
from perception.types import LABELS, Evidence

# word or phrase → the emotion it usually signals. Matched case-insensitively on word boundaries.
LEXICON: dict[str, str] = {
    **dict.fromkeys(
        [
            "hate",
            "angry",
            "furious",
            "mad",
            "annoyed",
            "annoying",
            "ridiculous",
            "stupid",
            "sick of",
            "fed up",
            "damn",
            "unacceptable",
            "outrageous",
            "pissed",
        ],
        "angry",
    ),
    **dict.fromkeys(["disgusting", "gross", "yuck", "nasty", "revolting", "eww", "creepy"], "disgust"),
    **dict.fromkeys(
        [
            "scared",
            "afraid",
            "worried",
            "nervous",
            "anxious",
            "terrified",
            "frightened",
            "panic",
            "fear",
            "scary",
            "worry",
        ],
        "fear",
    ),
    **dict.fromkeys(
        [
            "great",
            "happy",
            "glad",
            "love",
            "wonderful",
            "awesome",
            "thanks",
            "thank you",
            "excited",
            "fantastic",
            "amazing",
            "nice",
            "yay",
            "perfect",
            "excellent",
            "brilliant",
            "fun",
        ],
        "happy",
    ),
    **dict.fromkeys(
        [
            "sorry",
            "sad",
            "miss",
            "lonely",
            "unhappy",
            "depressed",
            "cry",
            "crying",
            "hurt",
            "upset",
            "alone",
            "lost",
            "tired",
            "heartbroken",
            "unfortunately",
        ],
        "sad",
    ),
}
LABEL_ADJECTIVE = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "neutral": "calm",
    "sad": "sadness",
}
_NEGATIONS = {"not", "no", "never", "don't", "dont", "didn't", "isn't", "wasn't", "aren't", "can't", "won't"}
_LEXICON_RE = re.compile(
    r"\b(" + "|".join(re.escape(w) for w in sorted(LEXICON, key=len, reverse=True)) + r")\b", re.IGNORECASE
)
MAX_ACOUSTIC_CITES = 3
# How a label reads after "sounds".
LABEL_DISPLAY = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
}


@dataclass(frozen=True)
class LexicalHit:
    quote: str  # verbatim from the transcript
    label: str
    negated: bool = False

    @property
    def claim(self) -> str:
        if self.negated:
            return f"negated word usually signalling {LABEL_ADJECTIVE[self.label]}"
        return f"word usually signalling {LABEL_ADJECTIVE[self.label]}"


def lexical_hits(transcript: str) -> list[LexicalHit]:
    """Lexicon words found in the transcript, each quoted exactly as written there (first occurrence)."""
    hits: list[LexicalHit] = []
    seen: set[str] = set()
    for m in _LEXICON_RE.finditer(transcript):
        quote = m.group(0)
        if quote.lower() in seen:
            continue
        seen.add(quote.lower())
        clause = re.split(r"[.!?;,]", transcript[: m.start()])[-1]  # negation does not cross punctuation
        before = re.findall(r"[a-z']+", clause.lower())[-2:]
        hits.append(LexicalHit(quote, LEXICON[quote.lower()], negated=any(w in _NEGATIONS for w in before)))
    return hits


def lexicon_scores(hits: list[LexicalHit], neutral_weight: float = 2.0) -> dict[str, float]:
    """A neutral-leaning distribution over LABELS from lexicon hits alone (used for typed turns).

    Neutral starts with ``neutral_weight`` pseudo-counts, every label with 0.25; each non-negated hit
    adds 1 to its label. A single "thanks" therefore gives happy 0.36 vs neutral 0.55: words alone are
    weak evidence of how someone feels.
    """
    weights = {label: 0.25 for label in LABELS}
    weights["neutral"] += neutral_weight
    for hit in hits:
        if not hit.negated:
            weights[hit.label] += 1.0
    total = sum(weights.values())
    scores = {label: round(w / total, 4) for label, w in weights.items()}
    top = max(scores, key=lambda k: scores[k])
    scores[top] = round(scores[top] + 1.0 - sum(scores.values()), 4)
    return scores


def acoustic_claim(cue: str, z: float) -> str:
    spec = CUES[cue]
    if z >= CLAIM_Z:
        return spec.high_claim
    if z <= -CLAIM_Z:
        return spec.low_claim
    return f"{spec.description} near reference"


@dataclass
class Reasoning:
    """Sentences, each with the evidence items that back it."""

    sentences: list[tuple[str, list[Evidence]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s for s, _ in self.sentences)

    @property
    def evidence(self) -> list[Evidence]:
        return [e for _, items in self.sentences for e in items]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def build_reasoning(
    label: str,
    scores: dict[str, float],
    cue_z: dict[str, float],
    transcript: str,
    reference: str = "the speaker's baseline",
) -> Reasoning:
    """Reasoning for an audio turn from the measured cue z-scores and the transcript."""
    out = Reasoning()
    p = scores.get(label, 0.0)
    known = {c: z for c, z in cue_z.items() if c in CUES}
    ranked = sorted(known.items(), key=lambda kv: abs(kv[1]), reverse=True)
    notable = [(c, z) for c, z in ranked if abs(z) >= CLAIM_Z][:MAX_ACOUSTIC_CITES]
    certainty = "sounds" if p >= 0.45 else "most likely sounds"
    shown = LABEL_DISPLAY.get(label, label)
    if notable:
        items = [Evidence(kind="acoustic", cue=c, value=z, claim=acoustic_claim(c, z)) for c, z in notable]
        parts = [f"{e.claim} ({e.cue} z={e.value:+.1f})" for e in items]
        out.sentences.append(
            (
                f"The speaker {certainty} {shown} ({p:.0%}), with {_join(parts)} relative to {reference}.",
                items,
            )
        )
    elif ranked:
        items = [Evidence(kind="acoustic", cue=c, value=z, claim=acoustic_claim(c, z)) for c, z in ranked[:2]]
        parts = [f"{e.cue} z={e.value:+.1f}" for e in items]
        out.sentences.append(
            (
                f"The speaker {certainty} {shown} ({p:.0%}); no measured cue stood out from {reference} "
                f"(largest: {', '.join(parts)}).",
                items,
            )
        )
    hits = lexical_hits(transcript)
    if hits:
        out.sentences.append(_lexical_sentence(hits))
    return out


def _lexical_sentence(hits: list[LexicalHit]) -> tuple[str, list[Evidence]]:
    items = [Evidence(kind="lexical", quote=h.quote, claim=h.claim) for h in hits]
    quoted = [f'"{h.quote}" ({"negated, " if h.negated else ""}{LABEL_ADJECTIVE[h.label]})' for h in hits]
    return f"The words include {_join(quoted)}.", items


def build_text_reasoning(label: str, scores: dict[str, float], text: str) -> Reasoning:
    """Reasoning for a typed turn: there was no audio, so only lexical evidence exists."""
    out = Reasoning()
    hits = lexical_hits(text)
    p = scores.get(label, 0.0)
    shown = LABEL_DISPLAY.get(label, label)
    if not hits:
        out.sentences.append(
            (
                f"Typed turn with no audio and no emotion words, so the estimate stays {shown} ({p:.0%}).",
                [],
            )
        )
        return out
    sentence, items = _lexical_sentence(hits)
    out.sentences.append(
        (
            f"Typed turn with no audio, judged from words alone as {shown} ({p:.0%}): "
            f"{sentence[0].lower()}{sentence[1:]}",
            items,
        )
    )
    return out


def text_model_sentence(
    label: str, p: float, words: list[str], share: float | None = None
) -> tuple[str, list[Evidence]]:
    """The sentence citing the words the text model read ``label`` from (``share``: their weight in a
    spoken turn's estimate; ``None`` for a typed turn, where the words are all there is)."""
    shown = LABEL_DISPLAY.get(label, label)
    adjective = LABEL_ADJECTIVE.get(label, label)
    items = [
        Evidence(kind="lexical", quote=w, claim=f"word carrying {adjective} in the text model") for w in words
    ]
    quoted = _join([f'"{w}"' for w in words]) if words else ""
    if share is None:
        if not words:
            return f"Typed turn with no audio; its words read as {shown} ({p:.0%}).", []
        return f"Typed turn with no audio; its words read as {shown} ({p:.0%}), carried by {quoted}.", items
    if not words:
        return f"The words read as {shown} ({p:.0%}) and weigh {share:.0%} in the estimate.", []
    return (
        f"The words read as {shown} ({p:.0%}), carried by {quoted}, and weigh {share:.0%} in the estimate.",
        items,
    )
