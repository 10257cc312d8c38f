"""``emo-agent train``: fine-tune the dual-encoder AudioLLM on emotional speech corpora.

    emo-agent train --data crema-d=../shared/data/crema-d --out runs/default \
        --schedule alternating --steps 400,400,200 --batch-size 8

Steps: load clips (``--data KIND=PATH``, repeatable; ``--manifest M.csv`` is ``--data manifest=M.csv``),
cache features (``<cache>/audiollm-features``), write verified reasoning targets with the teacher, then
train with the schedule. ``--eval-manifest M.csv`` (or ``--holdout-speakers N``: every clip of N
speakers of the training data held out) scores UA / WA / macro-F1 every ``--eval-every`` steps into
``<out>/eval.json``. ``--conditions reverb,telephone,...`` adds degraded copies of every training clip
(:mod:`perception.degradations`; each copy standardised as its own speaker-condition pair).
``<out>/norms.json`` keeps the training corpus's cue norms (the perceiver's reference
for a new speaker). Re-running the same command resumes from the newest checkpoint in ``--out``. Also
runnable as ``python -m perception.finetune.cli ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from perception.base import PerceptionError

log = logging.getLogger(__name__)


def add_train_parser(subparsers) -> argparse.ArgumentParser:  # argparse._SubParsersAction
    """Register ``train`` on an ``argparse`` subparsers object (``func`` is set to :func:`run`)."""
    p = subparsers.add_parser("train", help="fine-tune the dual-encoder AudioLLM")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help="corpus to train on: manifest|crema-d|ravdess|iemocap|meld=PATH (repeatable)",
    )
    p.add_argument("--manifest", action="append", default=[], help="manifest CSV (same as --data manifest=M)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, final model")
    p.add_argument("--config", default=None, help="DualEncoderConfig JSON (default: the built-in one)")
    p.add_argument(
        "--init-from",
        default=None,
        metavar="RUN",
        help="start from another run's trained weights (a run folder or its final/ or checkpoint-*/); "
        "its config is the default one",
    )
    p.add_argument(
        "--pooled-layers",
        default=None,
        metavar="I,J",
        help="Whisper encoder layers whose pooled states the aux head also reads (e.g. 2; 'none' for none)",
    )
    p.add_argument(
        "--aux-heads",
        type=int,
        default=None,
        metavar="K",
        help="aux heads trained side by side, their probabilities averaged (a new run's config)",
    )
    p.add_argument("--schedule", default="alternating", choices=["alternating", "joint"])
    p.add_argument(
        "--steps", default="300,300,200", help="steps per phase (speech,emotion,joint); joint uses their sum"
    )
    p.add_argument(
        "--aux-steps",
        type=int,
        default=0,
        help="steps of the emotion-aux phase (aux head only, no LM pass; before the joint phase)",
    )
    p.add_argument(
        "--head-steps",
        type=int,
        default=0,
        help="steps of the final emotion-head phase (the aux head alone on the frozen towers)",
    )
    p.add_argument(
        "--explain-steps",
        type=int,
        default=0,
        help="steps of the final explain phase (emotion_reasoning, LoRA only; after emotion-head)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--aux-batch-size", type=int, default=32, help="batch size of the emotion-aux phase")
    p.add_argument("--head-batch-size", type=int, default=128, help="batch size of the emotion-head phase")
    p.add_argument("--head-lr", type=float, default=3e-4, help="learning rate of the emotion-head phase")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop (with a checkpoint) after this global step"
    )
    p.add_argument("--eval-manifest", default=None, help="held-out manifest CSV scored during training")
    p.add_argument(
        "--holdout-speakers", type=int, default=0, help="hold out every clip of N speakers for evaluation"
    )
    p.add_argument(
        "--eval-every", type=int, default=None, help="evaluate every N steps (default: --save-every)"
    )
    p.add_argument("--limit", type=int, default=None, help="first N clips per corpus")
    p.add_argument(
        "--conditions",
        default="",
        help="comma-separated perception.degradations conditions (noise-15db, reverb, telephone, ...): "
        "every training clip gets --condition-copies copies heard in one of them",
    )
    p.add_argument("--condition-copies", type=int, default=1, help="degraded copies per training clip")
    p.add_argument("--teacher", default="template", help="template | hf:MODEL | openai:URL[#MODEL]")
    p.add_argument("--cache-dir", default=None, help="default: EMO_CACHE_DIR (features, converted LM)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in --out")
    p.add_argument("--prepare-only", action="store_true", help="cache features and targets, do not train")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def _clips(args: argparse.Namespace):
    from perception.finetune.datasets import load_corpus

    specs = list(args.data) + [f"manifest={m}" for m in args.manifest]
    if not specs:
        raise PerceptionError("nothing to train on: give --data KIND=PATH or --manifest M.csv")
    clips = []
    for spec in specs:
        kind, sep, path = spec.partition("=")
        if not sep or not path:
            raise PerceptionError(f"--data wants KIND=PATH, got {spec!r}")
        try:
            found, skipped = load_corpus(kind.strip(), Path(path).expanduser())
        except ValueError as exc:
            raise PerceptionError(str(exc)) from exc
        if not found:
            raise PerceptionError(f"no usable clips in {kind}={path}")
        if skipped:
            log.warning("%s: skipped %s", kind, dict(skipped))
        clips.extend(found[: args.limit] if args.limit else found)
    return clips


def run(args: argparse.Namespace) -> int:
    """Prepare data and train (or resume). User errors: one line on stderr, exit code 2."""
    try:
        return _run(args)
    except PerceptionError as exc:
        print(f"emo-agent train: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from perception.acoustics import CorpusNorms
    from perception.audiollm import DualEncoderConfig, DualEncoderForEmotionReasoning, DualEncoderProcessor
    from perception.audiollm.checkpoint import load_matching_weights
    from perception.audiollm.modeling import resolve_language_model
    from perception.audiollm.run_folder import NORMS_NAME
    from perception.config import default_cache_dir
    from perception.finetune.data import BatchSampler, SpeakerNormalizer, prepare_items
    from perception.finetune.datasets import degraded_copies
    from perception.finetune.evaluation import HeldOutEvaluator, eval_items, holdout_speakers
    from perception.finetune.features import FeatureCache, WhisperFeatureExtractor
    from perception.finetune.supervision import build_teacher
    from perception.finetune.trainer import TrainConfig, Trainer, latest_checkpoint, make_accelerator

    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    out = Path(args.out)
    saved = out / "config.json"
    init_from = _init_folder(args.init_from) if args.init_from else None
    resuming = saved.is_file() and not args.no_resume
    config_path = args.config or (saved if resuming else init_from)
    try:
        config = DualEncoderConfig.load(config_path) if config_path else DualEncoderConfig()
        if args.pooled_layers is not None and not resuming:
            spec = args.pooled_layers.strip().lower()
            config.semantic.pooled_layers = [] if spec in ("", "none") else [int(i) for i in spec.split(",")]
        if args.aux_heads is not None and not resuming:
            if args.aux_heads < 1:
                raise ValueError(f"--aux-heads must be at least 1, got {args.aux_heads}")
            config.aux_heads = args.aux_heads
        schedule = schedule_from_args(args)
    except (OSError, ValueError, TypeError) as exc:
        raise PerceptionError(f"bad configuration: {exc}") from exc
    clips = _clips(args)
    held_out: list = []
    if args.holdout_speakers:
        try:
            clips, held_out = holdout_speakers(clips, args.holdout_speakers, args.seed)
        except ValueError as exc:
            raise PerceptionError(str(exc)) from exc
    if args.eval_manifest:
        held_out += _clips(
            argparse.Namespace(data=[f"manifest={args.eval_manifest}"], manifest=[], limit=None)
        )
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    try:
        clips += degraded_copies(clips, conditions, args.condition_copies, args.seed)
    except ValueError as exc:
        raise PerceptionError(str(exc)) from exc
    try:
        cache = FeatureCache(cache_dir, WhisperFeatureExtractor(config, cache_dir))
    except ValueError as exc:  # e.g. pooled layers the encoder does not have
        raise PerceptionError(f"bad configuration: {exc}") from exc
    process = make_accelerator(args.grad_accum)  # this process, alone or one of an `accelerate launch`
    main = process.is_main_process  # writes the run folder; the others only read
    with (
        process.local_main_process_first()
    ):  # each machine's first process fills its cache, the others read it
        clips = cache.warm(clips, progress=not args.no_progress)  # unusable audio is logged and left out
    pools, stats = prepare_items(
        clips, cache, build_teacher(args.teacher), tuple(config.labels), progress=not args.no_progress
    )
    out.mkdir(parents=True, exist_ok=True)
    # "typical speech" for a new speaker's first turns: the corpus as recorded
    norms = CorpusNorms.from_samples([cache.get(c).cues for c in clips if c.condition == "clean"])
    if main:  # the perceiver's reference
        (out / NORMS_NAME).write_text(json.dumps(norms.to_json(), indent=2) + "\n")
    normalizer = None
    if config.speaker_norm:
        normalizer = SpeakerNormalizer.from_pools(config, pools)
        if main:
            normalizer.norms.save(out)  # the perceiver's reference for a new speaker's voice
    if main:
        write_training_meta(out, args, clips, held_out, schedule, resume=not args.no_resume)
    held_items = []
    if held_out:
        with process.local_main_process_first():
            held_out = cache.warm(held_out, progress=not args.no_progress)
        held_items = eval_items(held_out, [cache.get(c) for c in held_out], tuple(config.labels))
    print(
        f"clips {len(clips)}; items "
        + ", ".join(f"{k} {len(v)}" for k, v in pools.items())
        + f"; reasoning targets accepted {stats.accepted}, rejected {stats.rejected},"
        + f" fallback {stats.fallback}",
        file=sys.stderr,
    )
    if args.prepare_only:
        return 0
    from transformers import AutoTokenizer

    with process.local_main_process_first():  # the bundled LM is converted into the cache once
        tokenizer = AutoTokenizer.from_pretrained(resolve_language_model(config.language_model, cache_dir))
    processor = DualEncoderProcessor(config, tokenizer)
    if main:
        config.save(out)
    evaluator = None
    if held_items:
        evaluator = HeldOutEvaluator(
            held_items, processor, args.batch_size, norms=normalizer.norms if normalizer else None
        )
    import torch

    torch.manual_seed(args.seed)  # the trained parts' initial weights and dropout: reproducible per seed
    model = DualEncoderForEmotionReasoning.from_config(config, cache_dir)
    if init_from is not None and (args.no_resume or latest_checkpoint(out) is None):  # a new run
        try:
            fresh = load_matching_weights(model, init_from)
        except ValueError as exc:
            raise PerceptionError(f"--init-from {args.init_from}: {exc}") from exc
        parts = sorted({name.rsplit(".", 1)[0] for name in fresh})
        print(f"started from {init_from}; trained afresh: {', '.join(parts) or 'nothing'}", file=sys.stderr)
    try:
        trainer = Trainer(
            model,
            BatchSampler(pools, processor, seed=args.seed, normalizer=normalizer, augment=config.augment),
            TrainConfig(
                out,
                schedule,
                batch_size=args.batch_size,
                lr=args.lr,
                weight_decay=args.weight_decay,
                grad_accum=args.grad_accum,
                save_every=args.save_every,
                seed=args.seed,
                progress=not args.no_progress,
                eval_every=args.save_every if args.eval_every is None else args.eval_every,
            ),
            accelerator=process,
            evaluator=evaluator,
        )
    except ValueError as exc:  # a launch the trainer cannot run (FSDP, DeepSpeed with phases)
        raise PerceptionError(str(exc)) from exc
    state = trainer.train(max_steps=args.max_steps, resume=not args.no_resume)
    if state.global_step >= schedule.total_steps and main:
        finish_training_meta(out)
    print(
        f"step {state.global_step}/{schedule.total_steps}; last loss "
        f"{state.losses[-1] if state.losses else float('nan'):.4f}; run folder {out}",
        file=sys.stderr,
    )
    return 0


def _init_folder(spec: str) -> Path:
    """The checkpoint folder ``--init-from`` names: the folder itself, else its ``final/``, else its
    newest ``checkpoint-*``."""
    from perception.audiollm.checkpoint import WEIGHTS_NAME
    from perception.finetune.trainer import latest_checkpoint

    path = Path(spec).expanduser()
    for candidate in (path, path / "final", latest_checkpoint(path) if path.is_dir() else None):
        if candidate is not None and (candidate / WEIGHTS_NAME).is_file():
            return candidate
    raise PerceptionError(f"--init-from {spec}: no trained weights there ({WEIGHTS_NAME})")


def schedule_from_args(args: argparse.Namespace):
    """The schedule ``--schedule``, ``--steps``, ``--aux-steps``, ``--head-steps`` and ``--explain-steps``
    ask for, with the batch sizes and learning rate of the aux and head phases."""
    from perception.finetune.schedule import build_schedule

    steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
    schedule = build_schedule(args.schedule, steps, args.aux_steps, args.head_steps, args.explain_steps)
    for phase in schedule.phases:
        if phase.name == "emotion-aux":
            phase.batch_size = args.aux_batch_size
        elif phase.name == "emotion-head":
            phase.batch_size, phase.lr = args.head_batch_size, args.head_lr
    return schedule


TRAINING_META = "training.json"


def write_training_meta(
    out: Path, args: argparse.Namespace, clips, held_out, schedule, resume: bool = True
) -> Path:
    """``<out>/training.json``: the command, the data and the held-out speakers, so a run can be
    reproduced and its evaluation kept to speakers it never heard; for a run started ``--init-from``
    another, that run's path and record (``init_from``). A run resumed from a checkpoint
    keeps its ``started`` time and lists each resumption (``resumed``: time and global step)."""
    import platform
    import time

    from perception.finetune.trainer import STATE_NAME, latest_checkpoint

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    meta = {
        "command": "emo-agent train "
        + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
        "data": list(args.data) + [f"manifest={m}" for m in args.manifest],
        "train_clips": len(clips),
        "train_speakers": len({c.speaker for c in clips if c.speaker}),
        "held_out_clips": len(held_out),
        "held_out_speakers": sorted({c.speaker for c in held_out if c.speaker}),
        "schedule": schedule.to_dict(),
        "batch_size": args.batch_size,
        "aux_batch_size": args.aux_batch_size,
        "head_batch_size": args.head_batch_size,
        "head_lr": args.head_lr,
        "grad_accum": args.grad_accum,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "teacher": args.teacher,
        "seed": args.seed,
        "started": now,
        "python": platform.python_version(),
    }
    if getattr(args, "init_from", None):  # where its weights started: that run's own record, nested
        source = _init_folder(args.init_from)
        meta["init_from"] = {"path": str(source)}
        for folder in (source, source.parent):
            if (folder / TRAINING_META).is_file():
                meta["init_from"]["training"] = json.loads((folder / TRAINING_META).read_text())
                break
    path = out / TRAINING_META
    if resume and path.is_file() and (checkpoint := latest_checkpoint(out)) is not None:
        # the run goes on from a checkpoint: keep when it started and note where each invocation resumed
        previous = json.loads(path.read_text())
        meta["started"] = previous.get("started", now)
        step = json.loads((checkpoint / STATE_NAME).read_text())["global_step"]
        meta["resumed"] = previous.get("resumed", []) + [{"at": now, "step": int(step)}]
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def finish_training_meta(out: Path) -> dict:
    """Add ``finished`` and ``held_out_eval`` (the newest entry of ``eval.json``, without its confusion
    matrix) to ``<out>/training.json`` once the schedule is done; returns the record."""
    import time

    path = out / TRAINING_META
    meta = json.loads(path.read_text())
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    evals = out / "eval.json"
    if evals.is_file():
        latest = json.loads(evals.read_text())["latest"]
        meta["held_out_eval"] = {k: latest[k] for k in ("step", "n", "ua", "wa", "macro_f1") if k in latest}
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.finetune.cli [train] ARGS``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["train"]:
        args_list = args_list[1:]
    parser = argparse.ArgumentParser(prog="emo-agent")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *args_list])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
