"""Perception evaluation over a manifest CSV: reading manifests, metrics and the eval report.

Owns :func:`read_manifest` (the manifest contract: ``path`` relative to the manifest's folder or
absolute, ``emotion`` mapped onto the canonical labels, unmapped labels reported and skipped),
:func:`evaluate` (the eval report with exactly the contract's keys) and :func:`format_report` (the
human-readable table the CLI prints). Run through ``emo-agent eval --manifest M.csv``. Metrics come
from scikit-learn.
"""

from __future__ import annotations

import csv
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perception.base import Perceiver, PerceptionError
from perception.types import LABELS, canonical_label


class ManifestError(PerceptionError):
    """The manifest is missing or lacks a required column."""


@dataclass(frozen=True)
class ManifestRow:
    path: Path
    emotion: str  # canonical label
    transcript: str | None = None
    speaker: str | None = None


def read_manifest(path: str | Path) -> tuple[list[ManifestRow], Counter[str]]:
    """Rows with a canonical label, and a count of the raw labels that were skipped (unmapped)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    base = path.resolve().parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "emotion") if c not in columns]
            if missing:
                has = ", ".join(columns) or "none"
                raise ManifestError(f"manifest {path} lacks column(s) {', '.join(missing)} (has: {has})")
            rows: list[ManifestRow] = []
            skipped: Counter[str] = Counter()
            for raw in reader:
                # Extra fields beyond the header arrive under the key None: ignored.
                record = {k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
                label = canonical_label(record.get("emotion", ""))
                if label is None:
                    skipped[record.get("emotion", "")] += 1
                    continue
                if not record.get("path"):
                    raise ManifestError(f"manifest {path} line {reader.line_num}: empty path")
                clip = Path(record["path"])
                rows.append(
                    ManifestRow(
                        path=clip if clip.is_absolute() else base / clip,
                        emotion=label,
                        transcript=record.get("transcript") or None,
                        speaker=record.get("speaker") or record.get("actor") or None,
                    )
                )
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path} is not UTF-8 text") from exc
    except csv.Error as exc:
        raise ManifestError(f"manifest {path} is not valid CSV: {exc}") from exc
    return rows, skipped


# -- metrics ----------------------------------------------------------------------------------------


def confusion_matrix(true: list[str], pred: list[str], labels: tuple[str, ...] = LABELS) -> np.ndarray:
    """``(len(labels), len(labels))`` counts, rows = true label, columns = predicted label
    (scikit-learn's ``confusion_matrix`` over the canonical label order)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    if not true:
        return np.zeros((len(labels), len(labels)), dtype=np.int64)
    return sk_confusion_matrix(true, pred, labels=list(labels)).astype(np.int64)


def classification_metrics(true: list[str], pred: list[str]) -> dict[str, float]:
    """UA (mean recall over the classes present in ``true``), WA (accuracy) and macro-F1 (over the classes
    present), by scikit-learn's ``recall_score``, ``accuracy_score`` and ``f1_score``."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    if not true:
        return {"ua": 0.0, "wa": 0.0, "macro_f1": 0.0}
    present = sorted(set(true))
    return {
        "ua": float(recall_score(true, pred, labels=present, average="macro", zero_division=0)),
        "wa": float(accuracy_score(true, pred)),
        "macro_f1": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)),
    }


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """:func:`classification_metrics` of the label pairs a confusion matrix counts."""
    cm = np.asarray(cm, dtype=np.int64)
    index = np.indices(cm.shape).reshape(2, -1)
    counts = cm.reshape(-1)
    true = np.repeat(index[0], counts).tolist()
    pred = np.repeat(index[1], counts).tolist()
    return classification_metrics(true, pred)


_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def normalize_text(text: str) -> str:
    """Lowercase, numbers spelled out ("11" → "eleven", as references write them), punctuation
    stripped (apostrophes inside words kept), whitespace collapsed."""
    from num2words import num2words

    spelled = _NUMBER.sub(lambda m: " " + num2words(float(m.group(0).replace(",", ""))) + " ", text)
    return " ".join(_PUNCT.sub(" ", spelled.lower().replace("-", " ")).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float | None:
    """Corpus WER over normalized text; ``None`` when there are no references."""
    import jiwer

    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return None
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


# -- evaluation ---------------------------------------------------------------------------------------


def conversation_order(speakers: list[str | None], seed: int = 0) -> list[int]:
    """Indices grouped by speaker (sorted), each speaker's clips in a seeded random order: how clips are
    fed to a per-speaker running baseline, as the turns of one conversation with no label order to
    exploit. Clips without a speaker come last, in their own order."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    alone: list[int] = []
    for i, speaker in enumerate(speakers):
        (groups.setdefault(speaker, []) if speaker else alone).append(i)
    order: list[int] = []
    for speaker in sorted(groups):
        idx = groups[speaker]
        order.extend(idx[j] for j in rng.permutation(len(idx)))
    return order + alone


def evaluate(
    perceiver: Perceiver,
    rows: list[ManifestRow],
    limit: int | None = None,
    progress: bool = True,
    skipped: int | Mapping[str, int] = 0,
    speaker_baseline: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Perceive every row and return the eval report (exactly the contract's keys).

    Clips that are not usable audio are counted in ``skipped`` together with the manifest's unmapped
    labels (pass :func:`read_manifest`'s skipped counter, or their number, as ``skipped``).

    With ``speaker_baseline`` (default) each speaker's clips are perceived as the turns of one
    conversation, in :func:`conversation_order` (a seeded shuffle), against one running
    ``perceiver.new_baseline()``, as the live loop does; rows without a speaker are perceived alone.
    """
    skipped = sum(skipped.values()) if isinstance(skipped, Mapping) else int(skipped)
    from tqdm import tqdm

    from perception.audio import load_audio
    from perception.base import AudioError
    from perception.grounding import verify

    rows = rows[:limit] if limit is not None else rows
    true: list[str] = []
    pred: list[str] = []
    refs: list[str] = []
    hyps: list[str] = []
    claims = verified = 0
    audio_s = processing_s = 0.0
    model = perceiver.model_id
    if speaker_baseline:
        rows = [rows[i] for i in conversation_order([r.speaker for r in rows], seed)]
    baselines: dict[str, Any] = {}
    for row in tqdm(rows, desc="perceiving", unit="clip", disable=not progress, file=sys.stderr):
        try:
            audio = load_audio(row.path)
        except AudioError:
            skipped += 1
            continue
        baseline = None
        if speaker_baseline and row.speaker:
            baseline = baselines.get(row.speaker)
            if baseline is None:
                baseline = baselines[row.speaker] = perceiver.new_baseline()
        start = time.perf_counter()
        try:
            perception, cues = perceiver.perceive_with_cues(audio, baseline=baseline)
        except AudioError:
            skipped += 1
            continue
        processing_s += time.perf_counter() - start
        audio_s += len(audio) / 16_000
        model = perception.model
        true.append(row.emotion)
        pred.append(perception.emotion.label if perception.emotion.label in LABELS else "neutral")
        if row.transcript:
            refs.append(row.transcript)
            hyps.append(perception.transcript)
        n_claims, n_ok = verify(perception, perception.transcript, cues)
        claims += n_claims
        verified += n_ok
    cm = confusion_matrix(true, pred)
    scores = classification_metrics(true, pred)
    return {
        "n": len(true),
        "labels": list(LABELS),
        "ua": round(scores["ua"], 4),
        "wa": round(scores["wa"], 4),
        "macro_f1": round(scores["macro_f1"], 4),
        "confusion": {t: {p: int(cm[i, j]) for j, p in enumerate(LABELS)} for i, t in enumerate(LABELS)},
        "wer": None if not refs else round(word_error_rate(refs, hyps) or 0.0, 4),
        "grounding": {"claims": claims, "verified": round(verified / claims, 4) if claims else 1.0},
        "skipped": int(skipped),
        "rtf": round(processing_s / audio_s, 4) if audio_s else 0.0,
        "model": model,
    }


def format_report(report: dict[str, Any]) -> str:
    """The eval report as a small table and a confusion matrix, for a terminal."""
    wer = "n/a" if report.get("wer") is None else f"{report['wer']:.3f}"
    grounding = report.get("grounding", {})
    lines = [
        f"model      {report.get('model', '?')}",
        f"clips      {report.get('n', 0)}   (skipped {report.get('skipped', 0)})",
        f"UA         {report.get('ua', 0.0):.3f}",
        f"WA         {report.get('wa', 0.0):.3f}",
        f"macro-F1   {report.get('macro_f1', 0.0):.3f}",
        f"WER        {wer}",
        f"grounding  {grounding.get('verified', 0.0):.3f} of {grounding.get('claims', 0)} claims verified",
        f"RTF        {report.get('rtf', 0.0):.3f}",
        "",
        "confusion (rows: true, columns: predicted)",
    ]
    labels = report.get("labels", list(LABELS))
    width = max(7, *(len(label) for label in labels)) + 1
    lines.append(" " * width + "".join(f"{label[:7]:>8}" for label in labels))
    for t in labels:
        row = report.get("confusion", {}).get(t, {})
        lines.append(f"{t:<{width}}" + "".join(f"{row.get(p, 0):>8d}" for p in labels))
    return "\n".join(lines)
