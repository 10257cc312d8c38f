"""Reasoning-augmented supervision: a teacher writes label + evidence + reasoning, a verifier keeps it
only when every claim holds.

Teachers (pluggable, :class:`Teacher`):

* :class:`TemplateTeacher` (default, offline, deterministic): sentences built from the measured cue
  z-scores and lexicon words of the transcript, in the style of :mod:`perception.reasoning`.
* :class:`HFTeacher`: any transformers causal LM (a directory or hub id) prompted with the transcript,
  gold label and measured cues.
* :class:`OpenAITeacher`: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server).

LLM teachers answer in the target format of :mod:`perception.audiollm.parsing`; :func:`verify_explanation`
parses it back and checks it with :func:`perception.grounding.verify` (acoustic values must match the
measurement and point the right way, quotes must be verbatim), so a hallucinated cue or quote drops the
explanation, and :func:`supervise` falls back to the template teacher for that clip.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from perception.acoustics import CLAIM_Z, CUES, CorpusNorms, RunningBaseline, zscores
from perception.audiollm.parsing import format_reasoning_target, parse_generation
from perception.grounding import verify
from perception.reasoning import LABEL_DISPLAY, acoustic_claim, lexical_hits
from perception.types import LABELS, Emotion, Evidence, Perception

MAX_CUES = 3


@dataclass
class TeacherInput:
    transcript: str
    label: str
    cue_z: dict[str, float]  # cue z-scores against the corpus norms


class Teacher(Protocol):
    name: str

    def explain(self, item: TeacherInput) -> str:
        """The target text (format of :func:`format_reasoning_target`)."""
        ...


def corpus_zscores(cues: list[dict[str, float]]) -> list[dict[str, float]]:
    """Each clip's cues as z-scores against the norms of the whole training set (a new speaker's
    reference at run time, too)."""
    baseline = RunningBaseline(CorpusNorms.from_samples(cues))
    return [zscores(c, baseline) for c in cues]


class TemplateTeacher:
    name = "template"

    def explain(self, item: TeacherInput) -> str:
        shown = LABEL_DISPLAY.get(item.label, item.label)
        ranked = sorted(((c, z) for c, z in item.cue_z.items() if c in CUES), key=lambda kv: -abs(kv[1]))
        notable = [(c, z) for c, z in ranked if abs(z) >= CLAIM_Z][:MAX_CUES]
        cited = notable or ranked[:2]
        evidence = [Evidence(kind="acoustic", cue=c, value=z, claim=acoustic_claim(c, z)) for c, z in cited]
        if notable:
            parts = [f"{e.claim} ({e.cue} z={e.value:+.1f})" for e in evidence]
            sentences = [
                f"The speaker sounds {shown}, with {', '.join(parts)} compared with typical speakers."
            ]
        else:
            sentences = [f"The speaker sounds {shown}; no voice cue stood out from typical speakers."]
        hits = lexical_hits(item.transcript)
        for hit in hits:
            evidence.append(Evidence(kind="lexical", quote=hit.quote, claim=hit.claim))
        if hits:
            sentences.append("The words include " + ", ".join(f'"{h.quote}"' for h in hits) + ".")
        elif item.transcript.strip():
            sentences.append("The words themselves carry no clear emotion.")
        return format_reasoning_target(item.label, evidence, " ".join(sentences))


def teacher_prompt(item: TeacherInput) -> str:
    cues = "\n".join(
        f"- {c} z={z:+.2f} (allowed claim: {acoustic_claim(c, z)})" for c, z in sorted(item.cue_z.items())
    )
    return (
        f'Transcript: "{item.transcript}"\nThe speaker\'s emotion is: {item.label}\n'
        f"Measured voice cues (z-scores against typical speakers):\n{cues}\n\n"
        "Explain the emotion citing only these cues and words quoted exactly from the transcript. "
        "Answer in exactly this format and nothing else:\n"
        f"label: {item.label}\ncue: <cue name> <z as +0.00> <allowed claim>\n"
        'quote: "<exact words>" | <what they signal>\nreasoning: <two sentences>'
    )


class HFTeacher:
    """A transformers causal LM as teacher (``model``: directory or hub id; needs its weights)."""

    def __init__(self, model: str, max_new_tokens: int = 160) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"hf:{model}"
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model)
        self.max_new_tokens = max_new_tokens

    def explain(self, item: TeacherInput) -> str:
        messages = [{"role": "user", "content": teacher_prompt(item)}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


class OpenAITeacher:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint as teacher."""

    def __init__(
        self, base_url: str, model: str = "default", api_key: str = "none", timeout: float = 60
    ) -> None:
        self.name = f"openai:{model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout

    def explain(self, item: TeacherInput) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": teacher_prompt(item)}],
            "temperature": 0,
        }
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]


def build_teacher(spec: str) -> Teacher:
    """``"template"``, ``"hf:<model>"`` or ``"openai:<base url>[#model]"``."""
    if spec in ("", "template"):
        return TemplateTeacher()
    if spec.startswith("hf:"):
        return HFTeacher(spec[3:])
    if spec.startswith("openai:"):
        url, _, model = spec[7:].partition("#")
        return OpenAITeacher(url, model or "default")
    raise ValueError(f"unknown teacher {spec!r} (template, hf:<model>, openai:<url>[#model])")


def verify_explanation(text: str, item: TeacherInput, labels: tuple[str, ...] = LABELS) -> bool:
    """True when the text parses cleanly, names the gold label and every evidence claim verifies."""
    parsed = parse_generation(text, labels)
    if not parsed.ok or parsed.label != item.label or not parsed.reasoning:
        return False
    scores = {label: (1.0 if label == item.label else 0.0) for label in labels}
    perception = Perception(
        transcript=item.transcript,
        emotion=Emotion(label=item.label, scores=scores, valence=0.0, arousal=0.0),
        reasoning=parsed.reasoning,
        evidence=parsed.evidence,
        model="teacher",
    )
    n_claims, n_verified = verify(perception, item.transcript, item.cue_z)
    return n_claims == n_verified


@dataclass
class SupervisionStats:
    accepted: int = 0
    rejected: int = 0
    fallback: int = 0


def supervise(
    items: list[TeacherInput], teacher: Teacher, labels: tuple[str, ...] = LABELS
) -> tuple[list[str | None], SupervisionStats]:
    """A verified target per item (``None`` when none verified); the template teacher is the fallback."""
    fallback = TemplateTeacher()
    stats = SupervisionStats()
    targets: list[str | None] = []
    for item in items:
        try:
            text: str | None = teacher.explain(item)
        except Exception:  # an unreachable endpoint or a failing model must not stop data preparation
            text = None
        if text is not None and verify_explanation(text, item, labels):
            stats.accepted += 1
            targets.append(text)
            continue
        stats.rejected += 1
        if teacher.name != fallback.name:
            text = fallback.explain(item)
            if verify_explanation(text, item, labels):
                stats.fallback += 1
                targets.append(text)
                continue
        targets.append(None)
    return targets, stats
