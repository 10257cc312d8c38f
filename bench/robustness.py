"""Perception under other acoustic conditions, on CREMA-D actors held out from training.

    python -m bench.robustness [--limit 180] [--estimator audiollm --estimator classical]
                               [--condition reverb ...]

CREMA-D was recorded in one studio. Users talk through laptop microphones across rooms, in noise, over
phone lines. Each held-out clip of a seeded sample (``--limit``; each speaker's clips are one
conversation, as in ``emo-agent eval``) is degraded as :mod:`perception.degradations` describes (pink
noise at 15 and 5 dB SNR, a reverberant room, a telephone line, 10 % slower and faster speech, 20 dB
quieter) and perceived end to end by each estimator. Prints UA / WA / macro-F1, WER and RTF per condition
and estimator, and writes ``bench/results/robustness.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config import PerceptionSettings  # noqa: E402
from bench.perception import DEFAULT_MANIFEST, held_out_sample  # noqa: E402
from perception.degradations import CONDITIONS, degrade  # noqa: E402
from perception.evaluation import evaluate, read_manifest  # noqa: E402


def degraded_rows(rows, condition: str, folder: Path, seed: int = 0):
    """The rows' clips as heard in ``condition``, written as 16 kHz WAV under ``folder``."""
    import soundfile as sf

    from perception.audio import load_audio

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, row in enumerate(rows):
        rng = np.random.default_rng([seed, i])
        path = folder / f"{Path(row.path).stem}.wav"
        sf.write(str(path), degrade(load_audio(row.path), condition, rng), 16_000, subtype="FLOAT")
        out.append(replace(row, path=path))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--limit", type=int, default=180, help="held-out clips per condition")
    parser.add_argument("--holdout-speakers", type=int, default=15)
    parser.add_argument("--estimator", action="append", default=[], help="default: audiollm and classical")
    parser.add_argument("--condition", action="append", default=[], choices=list(CONDITIONS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "robustness.json"))
    args = parser.parse_args()

    from perception.registry import build_perceiver
    from perception.train_classical import validation_actors

    rows, _ = read_manifest(args.manifest)
    held_out = set(validation_actors([r.speaker for r in rows if r.speaker], n=args.holdout_speakers))
    sample = held_out_sample(rows, held_out, args.limit)
    conditions = args.condition or list(CONDITIONS)
    estimators = args.estimator or ["audiollm", "classical"]
    result: dict = {"clips": len(sample), "held_out_speakers": sorted(held_out), "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        degraded = {c: degraded_rows(sample, c, Path(tmp) / c) for c in conditions}
        for name in estimators:
            perceiver = build_perceiver(PerceptionSettings(estimator=name))
            for condition in conditions:
                print(f"{name}: {condition} ...", file=sys.stderr)
                report = evaluate(perceiver, degraded[condition], progress=False)
                result["conditions"].setdefault(condition, {})[name] = {
                    k: report[k] for k in ("n", "ua", "wa", "macro_f1", "wer", "rtf")
                }
            del perceiver
            gc.collect()

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(sample)} held-out clips per condition")
    header = "".join(f"  {name:>30s}" for name in estimators)
    print(f"{'condition':12s}{header}")
    print(f"{'':12s}" + "".join(f"  {'UA    WA    F1    WER   RTF':>30s}" for _ in estimators))
    for condition in conditions:
        cells = []
        for name in estimators:
            r = result["conditions"][condition][name]
            wer = float("nan") if r["wer"] is None else r["wer"]
            cells.append(f"{r['ua']:.3f} {r['wa']:.3f} {r['macro_f1']:.3f} {wer:.3f} {r['rtf']:.3f}")
        print(f"{condition:12s}" + "".join(f"  {c:>30s}" for c in cells))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
