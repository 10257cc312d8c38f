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
from dataclasses import dataclass
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
        (str(p), v, str(cache_dir))
        for v in variants
        for p in paths
        if not cache_path(cache_dir, p, v).exists()
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


def gets_augmented(path: Path, fraction: float) -> bool:
    """Whether ``path`` gets an augmented copy (a fixed, hash-based choice of ``fraction`` of the clips)."""
    return variant_seed(path, AUGMENTED) % 1000 < fraction * 1000


@dataclass
class Dataset:
    x: np.ndarray  # (N, FEATURE_DIM)
    y: np.ndarray  # (N,) index into LABELS
    actors: np.ndarray  # (N,) speaker id
    is_aug: np.ndarray  # (N,) bool: an augmented copy
    cues: list[dict[str, float]]  # raw cues of the clean clips (for corpus norms)


def load_dataset(rows: list, cache_dir: Path, augmented: bool = True, aug_fraction: float = 1.0) -> Dataset:
    """Cached features of ``rows`` (ManifestRow) plus the augmented copies that exist in the cache."""
    xs, ys, actors, is_aug, cues = [], [], [], [], []
    for row in rows:
        speaker = row.speaker or row.path.stem.split("_")[0]
        variants = [CLEAN, AUGMENTED] if augmented and gets_augmented(row.path, aug_fraction) else [CLEAN]
        for variant in variants:
            f = cache_path(cache_dir, row.path, variant)
            if not f.exists():
                continue
            clip = load_clip(f)
            xs.append(clip.vector())
            ys.append(LABELS.index(row.emotion))
            actors.append(speaker)
            is_aug.append(variant != CLEAN)
            if variant == CLEAN:
                cues.append(_cues(clip, row.transcript))
    return Dataset(np.stack(xs), np.array(ys), np.array(actors), np.array(is_aug), cues)


def fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
    model.fit(x, y)
    return model


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from perception.evaluation import confusion_matrix, metrics_from_confusion

    cm = confusion_matrix([LABELS[i] for i in y_true], [LABELS[i] for i in y_pred])
    return {k: round(v, 4) for k, v in metrics_from_confusion(cm).items()}


def choose_c(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: Sequence[float], folds: int = 3
) -> float:
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
    from perception.acoustics import CorpusNorms
    from perception.config import default_cache_dir
    from perception.evaluation import read_manifest

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--val-actors", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="train on clean clips only")
    parser.add_argument(
        "--aug-fraction", type=float, default=0.35, help="share of clips that also get an augmented copy"
    )
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--c", type=float, default=None, help="fix C instead of choosing it by grouped CV")
    parser.add_argument(
        "--cache-dir", default=str(default_cache_dir()), help="feature cache (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    started = time.time()
    cache_dir = Path(args.cache_dir)
    rows, skipped = read_manifest(args.manifest)
    if skipped:
        print(f"skipped labels: {dict(skipped)}", file=sys.stderr)
    paths = [r.path for r in rows]
    extract_all(paths, [CLEAN], cache_dir, args.workers)
    if not args.no_augment:
        extract_all(
            [p for p in paths if gets_augmented(p, args.aug_fraction)], [AUGMENTED], cache_dir, args.workers
        )
    if args.extract_only:
        return 0

    data = load_dataset(rows, cache_dir, augmented=not args.no_augment, aug_fraction=args.aug_fraction)
    held_out = validation_actors(data.actors.tolist(), args.val_actors, args.seed)
    val = np.isin(data.actors, held_out)
    n_clean = int((~data.is_aug).sum())
    print(
        f"{n_clean} clips (+{int(data.is_aug.sum())} augmented copies), {len(set(data.actors))} speakers; "
        f"held out: {', '.join(held_out)}",
        file=sys.stderr,
    )
    tr = ~val
    c = args.c
    if c is None:
        c = choose_c(data.x[tr], data.y[tr], data.actors[tr], [0.003, 0.01, 0.03])
    model = fit(data.x[tr], data.y[tr], c)
    val_clean = scores(data.y[val & ~data.is_aug], model.predict(data.x[val & ~data.is_aug]))
    val_aug = (
        scores(data.y[val & data.is_aug], model.predict(data.x[val & data.is_aug]))
        if data.is_aug.any()
        else {}
    )
    print(f"held-out speakers ({int((val & ~data.is_aug).sum())} clips), C={c:g}")
    for name, s in (("clean", val_clean), ("augmented", val_aug)):
        if s:
            print(f"  {name + ':':<11}UA {s['ua']:.4f}  WA {s['wa']:.4f}  macro-F1 {s['macro_f1']:.4f}")

    final = fit(data.x, data.y, c)
    norms = CorpusNorms.from_samples(data.cues)
    meta = {
        "feature_version": FEATURE_VERSION,
        "trained_on": str(Path(args.manifest).name),
        "n_clips": n_clean,
        "n_augmented": int(data.is_aug.sum()),
        "n_speakers": len(set(data.actors)),
        "C": c,
        "aug_fraction": 0.0 if args.no_augment else args.aug_fraction,
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

    names = _functional_names()
    return cues_from_measurements(
        dict(zip(names, clip.functionals.tolist(), strict=True)), clip.pauses, transcript
    )


_names_cache: list[str] = []


def _functional_names() -> list[str]:
    if not _names_cache:
        from perception.acoustics import AcousticAnalyzer

        _names_cache.extend(AcousticAnalyzer().functional_names)
    return _names_cache


if __name__ == "__main__":
    raise SystemExit(main())
