"""Train the shipped classical emotion estimator on a manifest (CREMA-D by default).

    python -m perception.train_classical --manifest /path/to/crema-d/manifest.csv \
        [--out perception/assets/classical_emotion.npz] [--workers 2] [--no-augment]

Steps: extract features for every clip (cached under ``<cache_dir>/features``; two worker processes),
hold out ``--val-actors`` speakers (never split by clip), pick the regularisation strength by grouped
cross-validation on the training speakers, report UA/WA/macro-F1 on the held-out speakers (clean and
with augmentation), then refit on every speaker and write the asset file (.npz, no pickle) with the
weights, the scaler and the corpus cue norms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from perception.features import (
    FEATURE_VERSION,
    ClipFeatures,
    augment,
    cache_path,
    compute_clip_features,
    load_clip,
    save_clip,
    variant_seed,
)
from perception.types import LABELS

DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "classical_emotion.npz"
CLEAN, AUGMENTED = "clean", "aug1"

_worker: dict[str, object] = {}


def validation_actors(actors: Sequence[str], n: int = 15, seed: int = 0) -> list[str]:
    """The held-out speakers: a fixed random choice of ``n`` among the sorted unique actors."""
    unique = sorted(set(actors))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(unique, size=min(n, len(unique) - 1), replace=False).tolist())


def _init_worker() -> None:
    from perception.acoustics import AcousticAnalyzer
    from perception.asr import WhisperASR

    _worker["analyzer"] = AcousticAnalyzer()
    _worker["asr"] = WhisperASR("tiny.en", cpu_threads=1)


def _extract_one(job: tuple[str, str, str]) -> str | None:
    """Compute and cache one clip's features; returns an error line or ``None``."""
    from perception.audio import load_audio
    from perception.base import AudioError

    audio_path, variant, cache_dir = job
    out = cache_path(Path(cache_dir), Path(audio_path), variant)
    if out.exists():
        return None
    try:
        audio = load_audio(audio_path)
    except AudioError as exc:
        return str(exc)
    if variant != CLEAN:
        audio = augment(audio, variant_seed(Path(audio_path), variant))
    clip = compute_clip_features(audio, _worker["analyzer"], _worker["asr"])  # type: ignore[arg-type]
    save_clip(out, clip)
    return None


def extract_all(paths: list[Path], variants: list[str], cache_dir: Path, workers: int) -> None:
    from tqdm import tqdm

    jobs = [
        (str(p), v, str(cache_dir)) for v in variants for p in paths if not cache_path(cache_dir, p, v).exists()
    ]
    if not jobs:
        return
    errors = []
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for err in tqdm(
            pool.imap_unordered(_extract_one, jobs, chunksize=8),
            total=len(jobs),
            desc="features",
            unit="clip",
            file=sys.stderr,
        ):
            if err:
                errors.append(err)
    for err in errors[:10]:
        print(f"skipped: {err}", file=sys.stderr)


def load_features(paths: list[Path], variant: str, cache_dir: Path) -> list[ClipFeatures | None]:
    out: list[ClipFeatures | None] = []
    for p in paths:
        f = cache_path(cache_dir, p, variant)
        out.append(load_clip(f) if f.exists() else None)
    return out


def fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    )
    model.fit(x, y)
    return model


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from agent.evaluation import confusion_matrix, metrics_from_confusion

    cm = confusion_matrix([LABELS[i] for i in y_true], [LABELS[i] for i in y_pred])
    return {k: round(v, 4) for k, v in metrics_from_confusion(cm).items()}


def choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: Sequence[float], folds: int = 3) -> float:
    """Regularisation strength with the best mean UA over speaker-grouped folds (training speakers only)."""
    from sklearn.model_selection import GroupKFold

    best_c, best_ua = grid[0], -1.0
    for c in grid:
        uas = []
        for tr, te in GroupKFold(n_splits=folds).split(x, y, groups):
            model = fit(x[tr], y[tr], c)
            uas.append(scores(y[te], model.predict(x[te]))["ua"])
        ua = float(np.mean(uas))
        print(f"  C={c:g}: grouped-CV UA {ua:.4f}", file=sys.stderr)
        if ua > best_ua:
            best_c, best_ua = c, ua
    return best_c


def save_asset(out: Path, model, norms, meta: dict) -> None:
    scaler, clf = model.steps[0][1], model.steps[1][1]
    order = [list(clf.classes_).index(i) for i in range(len(LABELS))]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(
        tmp,
        labels=np.array(LABELS),
        mean=scaler.mean_.astype(np.float32),
        scale=scaler.scale_.astype(np.float32),
        coef=clf.coef_[order].astype(np.float32),
        intercept=clf.intercept_[order].astype(np.float32),
        norms=np.array(json.dumps(norms.to_json())),
        meta=np.array(json.dumps(meta)),
    )
    os.replace(tmp, out)


def main(argv: Sequence[str] | None = None) -> int:
    from agent.config import Settings
    from agent.evaluation import read_manifest
    from perception.acoustics import CorpusNorms

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--val-actors", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="train on clean clips only")
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--c", type=float, default=None, help="fix C instead of choosing it by grouped CV")
    args = parser.parse_args(argv)

    started = time.time()
    cache_dir = Settings().cache_dir
    rows, skipped = read_manifest(args.manifest)
    if skipped:
        print(f"skipped labels: {dict(skipped)}", file=sys.stderr)
    paths = [r.path for r in rows]
    variants = [CLEAN] if args.no_augment else [CLEAN, AUGMENTED]
    extract_all(paths, variants, cache_dir, args.workers)
    if args.extract_only:
        return 0

    clean = load_features(paths, CLEAN, cache_dir)
    aug = load_features(paths, AUGMENTED, cache_dir) if not args.no_augment else [None] * len(rows)
    keep = [i for i, f in enumerate(clean) if f is not None]
    rows = [rows[i] for i in keep]
    clean = [clean[i] for i in keep]
    aug = [aug[i] for i in keep]
    x = np.stack([f.vector() for f in clean if f is not None])
    x_aug = np.stack([(a if a is not None else c).vector() for a, c in zip(aug, clean, strict=True) if c])
    y = np.array([LABELS.index(r.emotion) for r in rows])
    actors = np.array([r.speaker or r.path.stem.split("_")[0] for r in rows])

    held_out = validation_actors(actors.tolist(), args.val_actors, args.seed)
    val = np.isin(actors, held_out)
    tr = ~val
    x_tr = np.concatenate([x[tr], x_aug[tr]]) if not args.no_augment else x[tr]
    y_tr = np.concatenate([y[tr], y[tr]]) if not args.no_augment else y[tr]
    g_tr = np.concatenate([actors[tr], actors[tr]]) if not args.no_augment else actors[tr]
    print(f"{len(rows)} clips, {len(set(actors))} speakers; held out: {', '.join(held_out)}", file=sys.stderr)

    c = args.c if args.c is not None else choose_c(x_tr, y_tr, g_tr, [0.003, 0.01, 0.03])
    model = fit(x_tr, y_tr, c)
    val_clean = scores(y[val], model.predict(x[val]))
    val_aug = scores(y[val], model.predict(x_aug[val]))
    print(f"held-out speakers ({int(val.sum())} clips), C={c:g}")
    print(f"  clean:     UA {val_clean['ua']:.4f}  WA {val_clean['wa']:.4f}  macro-F1 {val_clean['macro_f1']:.4f}")
    print(f"  augmented: UA {val_aug['ua']:.4f}  WA {val_aug['wa']:.4f}  macro-F1 {val_aug['macro_f1']:.4f}")

    x_all = np.concatenate([x, x_aug]) if not args.no_augment else x
    y_all = np.concatenate([y, y]) if not args.no_augment else y
    final = fit(x_all, y_all, c)
    norms = CorpusNorms.from_samples(
        [
            _cues(f, r.transcript)
            for f, r in zip(clean, rows, strict=True)
            if f is not None
        ]
    )
    meta = {
        "feature_version": FEATURE_VERSION,
        "trained_on": str(Path(args.manifest).name),
        "n_clips": len(rows),
        "n_speakers": len(set(actors)),
        "augmented": not args.no_augment,
        "C": c,
        "val_actors": held_out,
        "val_seed": args.seed,
        "val_clean": val_clean,
        "val_augmented": val_aug,
        "version": 1,
    }
    save_asset(Path(args.out), final, norms, meta)
    print(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 0


def _cues(clip: ClipFeatures, transcript: str | None) -> dict[str, float]:
    from perception.acoustics import cues_from_measurements
    from perception.asr import WhisperASR  # noqa: F401  (names only)

    names = _functional_names()
    return cues_from_measurements(dict(zip(names, clip.functionals.tolist(), strict=True)), clip.pauses, transcript)


_names_cache: list[str] = []


def _functional_names() -> list[str]:
    if not _names_cache:
        from perception.acoustics import AcousticAnalyzer

        _names_cache.extend(AcousticAnalyzer().functional_names)
    return _names_cache


if __name__ == "__main__":
    raise SystemExit(main())
