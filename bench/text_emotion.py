"""What the words say, side by side: text-only, voice-only and fused emotion, in one run.

    python -m bench.text_emotion [--clips 120] [--weights 0,0.1,0.2,0.3,0.5]

* **Typed turns**, EmpatheticDialogues conversations held out of training (the validation split by
  conversation): the text model against today's emotion lexicon: valence sign accuracy on clearly
  positive vs negative openings (|valence| >= 0.3 in the mapping), six-class UA on openings and on later
  speaker turns (conversational turns), each read as a session reads it: after the same speaker's earlier
  turns of the conversation (``turn``; the lexicon reads the turn alone), and alone (``turn_alone``, how
  every turn was read before a session kept its words).
* **Spoken turns**, CREMA-D: the default perceiver's voice estimate alone, and fused with the words at each
  text weight, on clips of the AudioLLM's 15 held-out actors (report) and on clips of its training actors
  (where the weight is chosen: the largest whose UA is within 0.005 of the voice alone).

Writes ``bench/results/text_emotion.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.base import CONTEXT_TURNS  # noqa: E402
from perception.ed_emotions import is_validation, map_emotion  # noqa: E402
from perception.fusion import fuse  # noqa: E402
from perception.reasoning import lexical_hits, lexicon_scores  # noqa: E402
from perception.text_emotion import TextEmotionModel  # noqa: E402
from perception.types import LABELS  # noqa: E402

ED = REPO.parent / "shared" / "data" / "empathetic-dialogues"
CREMA = REPO.parent / "shared" / "data" / "crema-d"


def ua(gold: list[str], pred: list[str]) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return round(float(balanced_accuracy_score(gold, pred)), 4)


def typed(model: TextEmotionModel, limit: int) -> dict:
    from perception.estimator import valence_arousal

    rows = []
    said: dict[str, list[str]] = {}  # each conversation's speaker turns so far, oldest first
    with open(ED / "conversations.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["speaker"] == "speaker" and is_validation(row["conv_id"]) and map_emotion(row["emotion"]):
                row["text"] = " ".join(row["text"].replace("_comma_", ",").split())
                before = said.setdefault(row["conv_id"], [])
                row["earlier"] = list(before[-CONTEXT_TURNS:])
                before.append(row["text"])
                rows.append(row)
    out = {}
    for kind, pick, with_context in (
        ("opening", lambda r: r["turn"] == "0", False),
        ("turn", lambda r: r["turn"] != "0", True),
        ("turn_alone", lambda r: r["turn"] != "0", False),
    ):
        chosen = [r for r in rows if pick(r)][:limit]
        texts = [r["text"] for r in chosen]
        gold = [map_emotion(r["emotion"]) for r in chosen]
        readings = [model.read(r["text"], r["earlier"] if with_context else ()) for r in chosen]
        lex = [lexicon_scores(lexical_hits(t)) for t in texts]
        systems = {
            "text_model": ([r.label for r in readings], [r.valence for r in readings]),
            "lexicon": (
                [max(s, key=s.get) for s in lex],
                [valence_arousal(s)[0] for s in lex],
            ),
        }
        signed = [i for i, g in enumerate(gold) if abs(g[1]) >= 0.3]
        out[kind] = {"n": len(chosen), "n_signed": len(signed)}
        for name, (labels, valences) in systems.items():
            out[kind][name] = {
                "ua": ua([g[0] for g in gold], labels),
                "valence_sign_accuracy": round(
                    float(np.mean([np.sign(valences[i]) == np.sign(gold[i][1]) for i in signed])), 4
                ),
            }
    return out


def spoken(model: TextEmotionModel, n_clips: int, weights: list[float]) -> dict:
    from tqdm import tqdm

    from perception.config import PerceptionSettings
    from perception.registry import build_perceiver

    held = set(
        json.loads((REPO / "perception/assets/audiollm/training.json").read_text())["held_out_speakers"]
    )
    with open(CREMA / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    perceiver = build_perceiver(PerceptionSettings(text_model="none"))
    import soundfile as sf

    out = {}
    rng = np.random.default_rng(0)
    for split, members in (
        ("training_actors", lambda r: r["actor"] not in held),
        ("held_out", lambda r: r["actor"] in held),
    ):
        pool = [r for r in rows if members(r)]
        picked = [pool[i] for i in sorted(rng.choice(len(pool), size=min(n_clips, len(pool)), replace=False))]
        voice = []
        for r in tqdm(picked, desc=f"CREMA-D {split}", unit="clip"):
            audio, sr = sf.read(CREMA / r["path"], dtype="float32")
            p = perceiver.perceive(audio, sr)
            voice.append((p.emotion.scores, p.emotion.valence, p.emotion.arousal, model.read(p.transcript)))
        gold = [r["emotion"] for r in picked]
        out[split] = {"n": len(picked)}
        for w in weights:
            pred = []
            for scores, valence, arousal, reading in voice:
                fused = fuse(scores, valence, arousal, reading, w)
                pred.append(max(fused.scores, key=fused.scores.get))
            out[split][f"w={w}"] = ua(gold, pred)
        out[split]["text_only"] = ua(gold, [v[3].label for v in voice])
    base = out["training_actors"][f"w={weights[0]}"]
    ok = [w for w in weights if out["training_actors"][f"w={w}"] >= base - 0.005]
    out["chosen_weight"] = max(ok)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=120, help="CREMA-D clips per split")
    parser.add_argument("--typed", type=int, default=400, help="ED turns per kind")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.5")
    parser.add_argument("--model", default="", help="text_emotion.npz (default: the shipped one)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "text_emotion.json"))
    args = parser.parse_args()
    model = TextEmotionModel.load(args.model or None)
    weights = [float(w) for w in args.weights.split(",")]
    result = {"labels": list(LABELS), "typed": typed(model, args.typed)}
    if args.clips > 0:
        result["spoken"] = spoken(model, args.clips, weights)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
