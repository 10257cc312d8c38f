"""Perception benchmark on the held-out CREMA-D speakers (the training script's split).

    python bench/perception.py [--manifest ../shared/data/crema-d/manifest.csv] [--limit 120]

Prints, side by side:

* the shipped recipe (eGeMAPS + Whisper-encoder logistic regression) trained without the held-out
  speakers, and an eGeMAPS-only logistic regression trained the same way, both scored on the held-out
  speakers from cached features (the honest unseen-speaker figures; the shipped file itself is refit on
  every speaker, so scoring it on these speakers would flatter it);
* the full shipped perceiver run end to end on ``--limit`` held-out clips: UA/WA/macro-F1 (optimistic,
  see above), WER, grounding, real-time factor per stage and peak RSS.

Writes ``bench/results/perception.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config import Settings  # noqa: E402
from perception.estimator import ClassicalEstimator  # noqa: E402
from perception.evaluation import (  # noqa: E402
    confusion_matrix,
    metrics_from_confusion,
    read_manifest,
    word_error_rate,
)
from perception.train_classical import CLEAN, extract_all, fit, load_dataset  # noqa: E402
from perception.types import LABELS  # noqa: E402

DEFAULT_MANIFEST = REPO.parent / "shared" / "data" / "crema-d" / "manifest.csv"
N_EGEMAPS = 88


def held_out_sample(rows, held_out: set[str], limit: int, seed: int = 0) -> list:
    """A seeded sample of ``limit`` rows of the held-out speakers, in manifest order."""
    held_rows = [r for r in rows if r.speaker in held_out]
    size = min(limit, len(held_rows))
    picked = np.random.default_rng(seed).choice(len(held_rows), size=size, replace=False)
    return [held_rows[i] for i in sorted(picked)]


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    cm = confusion_matrix([LABELS[i] for i in y_true], [LABELS[i] for i in y_pred])
    return {k: round(v, 4) for k, v in metrics_from_confusion(cm).items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument(
        "--limit", type=int, default=120, help="held-out clips run through the full perceiver"
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "perception.json"))
    args = parser.parse_args()

    estimator = ClassicalEstimator.load()
    held_out = set(estimator.meta["val_actors"])
    c = float(estimator.meta.get("C", 0.01))
    rows, _ = read_manifest(args.manifest)
    cache_dir = Settings().cache_dir
    extract_all([r.path for r in rows], [CLEAN], cache_dir, workers=2)  # no-op when cached

    # -- unseen-speaker accuracy from cached features ----------------------------------------------
    data = load_dataset(
        rows, cache_dir, augmented=True, aug_fraction=float(estimator.meta.get("aug_fraction", 0.35))
    )
    val = np.isin(data.actors, sorted(held_out))
    test = val & ~data.is_aug
    started = time.perf_counter()
    full = fit(data.x[~val], data.y[~val], c)
    egemaps = fit(data.x[~val][:, :N_EGEMAPS], data.y[~val], c)
    fit_s = time.perf_counter() - started
    recipe = score(data.y[test], full.predict(data.x[test]))
    baseline = score(data.y[test], egemaps.predict(data.x[test][:, :N_EGEMAPS]))

    # -- the shipped perceiver, end to end --------------------------------------------------------
    from perception.audio import load_audio
    from perception.grounding import verify
    from perception.registry import build_perceiver

    load_started = time.perf_counter()
    perceiver = build_perceiver(Settings().perception)
    load_s = time.perf_counter() - load_started
    sample = held_out_sample(rows, held_out, args.limit)  # random: manifest order would skew the classes
    stage_ms: dict[str, float] = {}
    audio_s = total_s = 0.0
    true, pred, refs, hyps = [], [], [], []
    claims = verified = 0
    from tqdm import tqdm

    for row in tqdm(sample, desc="perceiving", unit="clip", file=sys.stderr):
        audio = load_audio(row.path)
        t0 = time.perf_counter()
        perception, cues = perceiver.perceive_with_cues(audio)
        total_s += time.perf_counter() - t0
        audio_s += len(audio) / 16_000
        for stage, ms in perception.timings_ms.items():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
        true.append(row.emotion)
        pred.append(perception.emotion.label)
        refs.append(row.transcript or "")
        hyps.append(perception.transcript)
        n, ok = verify(perception, perception.transcript, cues)
        claims, verified = claims + n, verified + ok
    shipped = {k: round(v, 4) for k, v in metrics_from_confusion(confusion_matrix(true, pred)).items()}
    rtf_stage = {k: round(v / 1000 / audio_s, 4) for k, v in stage_ms.items()}

    result = {
        "held_out_speakers": sorted(held_out),
        "held_out_clips": int(test.sum()),
        "unseen_speakers": {"egemaps_whisper_lr": recipe, "egemaps_only_lr": baseline, "C": c},
        "shipped_end_to_end": {
            "clips": len(sample),
            **shipped,
            "note": "the shipped estimator was refit on all speakers, these included",
            "wer": round(word_error_rate(refs, hyps) or 0.0, 4),
            "grounding": {"claims": claims, "verified": round(verified / claims, 4) if claims else 1.0},
            "rtf_total": round(total_s / audio_s, 4),
            "rtf_per_stage": rtf_stage,
            "mean_ms_per_turn": round(1000 * total_s / len(sample), 1),
            "mean_audio_s": round(audio_s / len(sample), 2),
        },
        "load_s": round(load_s, 2),
        "fit_s": round(fit_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "model": perceiver.model_id,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"held-out speakers: {len(held_out)}, clips: {int(test.sum())}")
    print(f"{'':28}{'UA':>8}{'WA':>8}{'F1':>8}")
    for name, s in (
        ("eGeMAPS + Whisper LR", recipe),
        ("eGeMAPS-only LR", baseline),
        (f"shipped, end to end (n={len(sample)})", shipped),
    ):
        print(f"{name:<28}{s['ua']:>8.3f}{s['wa']:>8.3f}{s['macro_f1']:>8.3f}")
    e2e = result["shipped_end_to_end"]
    print(f"WER {e2e['wer']:.3f}  grounding {e2e['grounding']['verified']:.3f} of {claims} claims")
    print(
        f"RTF total {e2e['rtf_total']:.3f}  per stage: "
        + ", ".join(f"{k} {v:.3f}" for k, v in rtf_stage.items())
    )
    print(f"mean {e2e['mean_ms_per_turn']:.0f} ms per turn of {e2e['mean_audio_s']:.1f} s")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB; models loaded in {result['load_s']:.1f} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
