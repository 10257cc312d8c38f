"""The AudioLLM against the previous estimator and classical baselines, on CREMA-D actors held out from
training (the same 15 actors ``emo-agent train --holdout-speakers 15`` and the classical training hold out).

    python -m bench.audiollm [--run alternating=perception/assets/audiollm] [--run joint=runs/joint/final]
                             [--limit 120] [--lm-limit 300]

Prints, side by side, and writes ``bench/results/audiollm.json``:

* **classical baselines**, refit here without the held-out actors from cached features: eGeMAPS + logistic
  regression, and eGeMAPS + mean/std-pooled Whisper tiny.en states + logistic regression (the previous
  estimator's recipe), each per clip and with the same per-speaker running normalisation the AudioLLM
  uses (a speaker's clips in conversation order, each against the ones before it);
* **encoder probes**: the same speaker-normalised logistic regression over the AudioLLM feature cache's
  pooled Whisper tiny.en layers (0: the first block's input, 1-4: each block's output, final: after the
  last layer norm), alone and with eGeMAPS: where in the encoder emotion is clearest;
* **each AudioLLM run** (``--run NAME=FOLDER``, default: the shipped one) on every held-out clip from the
  feature cache: its own scores (the config's ``score_source``), and the label-token likelihoods of the LM
  on ``--lm-limit`` of them;
* **end to end**: the shipped AudioLLM perceiver and the previous (classical) perceiver through
  ``emo-agent eval``'s code on ``--limit`` held-out clips (a seeded sample, each speaker a conversation):
  UA / WA / macro-F1, WER, grounding, real-time factor per stage, peak RSS. (The shipped classical
  estimator was refit on every actor, these included, so its end-to-end accuracy flatters it.)
* **the LM's own writing**: the first ``--gen-limit`` of those clips again with the LM writing the evidence
  and reasoning (``--gen-tokens``): how many of the evidence items it wrote verify against the turn, on how
  many turns its text is kept as written, and what a token costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config import PerceptionSettings, Settings  # noqa: E402
from bench.perception import DEFAULT_MANIFEST, N_EGEMAPS, held_out_sample  # noqa: E402
from perception.evaluation import (  # noqa: E402
    confusion_matrix,
    conversation_order,
    evaluate,
    metrics_from_confusion,
    read_manifest,
)
from perception.types import LABELS  # noqa: E402


def score(true: list[str], pred: list[str]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics_from_confusion(confusion_matrix(true, pred)).items()}


def rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process (``/proc/self/status``)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


def running_speaker_norm(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each row standardised against its speaker's rows so far (itself included), blended with the whole
    set's statistics: the AudioLLM's speaker normalisation (:mod:`perception.audiollm.speaker_norm`)
    applied to one vector per clip, the classical analogue."""
    from perception.audiollm import DualEncoderConfig
    from perception.audiollm.speaker_norm import FeatureNorms, StreamStats, normalize_stream

    prior = DualEncoderConfig().speaker_norm_prior
    norms = FeatureNorms({"x": x.mean(axis=0)}, {"x": x.var(axis=0)})
    out = np.empty_like(x)
    seen: dict[str, StreamStats] = {}
    for i in conversation_order(list(speakers)):
        stats = seen.setdefault(speakers[i], StreamStats())
        stats.add(x[i : i + 1])
        out[i] = normalize_stream(x[i : i + 1], norms, "x", stats, prior)[0]
    return out


def classical_baselines(rows, held_out: set[str]) -> dict[str, dict]:
    from perception.train_classical import CLEAN, extract_all, fit, load_dataset

    cache_dir = Settings().cache_dir
    extract_all([r.path for r in rows], [CLEAN], cache_dir, workers=2)  # no-op when cached
    data = load_dataset(rows, cache_dir, augmented=False)
    test = np.isin(data.actors, sorted(held_out))
    out = {}
    for name, cols in (("egemaps_lr", slice(0, N_EGEMAPS)), ("egemaps_whisper_lr", slice(None))):
        for norm in ("per_clip", "speaker_norm"):
            x = data.x[:, cols]
            if norm == "speaker_norm":
                x = running_speaker_norm(x, data.actors)
            model = fit(x[~test], data.y[~test], 0.01)
            pred = model.predict(x[test])
            out[f"{name}/{norm}"] = score([LABELS[i] for i in data.y[test]], [LABELS[i] for i in pred])
    out["_n"] = int(test.sum())
    return out


def encoder_probes(rows, held_out: set[str]) -> dict[str, dict]:
    """Speaker-normalised logistic regressions over pooled tiny.en layers (the feature cache's, every
    clip of ``rows``) and eGeMAPS, trained without the held-out actors."""
    from agent.config import default_cache_dir
    from perception.audiollm import DualEncoderConfig, SemanticEncoderConfig
    from perception.finetune.datasets import Clip
    from perception.finetune.features import FeatureCache, WhisperFeatureExtractor
    from perception.train_classical import fit

    config = DualEncoderConfig(semantic=SemanticEncoderConfig(pooled_layers=[2]))
    cache_dir = default_cache_dir()
    cache = FeatureCache(cache_dir, WhisperFeatureExtractor(config, cache_dir))
    clips = cache.warm([Clip(r.path, r.emotion, r.transcript, r.speaker, "crema-d") for r in rows])
    feats = [cache.get(c) for c in clips]
    speakers = np.array([c.speaker for c in clips])
    y = np.array([LABELS.index(c.emotion) for c in clips])
    test = np.isin(speakers, sorted(held_out))
    egemaps = np.stack([f.acoustic for f in feats])
    layers = np.stack([f.layers for f in feats])  # (N, 5, 768)
    final = np.stack([np.concatenate([f.semantic.mean(0), f.semantic.std(0)]) for f in feats])
    sets = {f"tiny.en layer {k}": layers[:, k] for k in range(layers.shape[1])}
    sets["tiny.en final"] = final
    sets["eGeMAPS + tiny.en final"] = np.hstack([egemaps, final])
    sets["eGeMAPS + tiny.en layer 2"] = np.hstack([egemaps, layers[:, 2]])
    sets["eGeMAPS + tiny.en layer 2 + final"] = np.hstack([egemaps, layers[:, 2], final])
    out = {}
    for name, x in sets.items():
        x = running_speaker_norm(x.astype(np.float64), speakers)
        model = fit(x[~test], y[~test], 0.01)
        out[name] = score([LABELS[i] for i in y[test]], [LABELS[i] for i in model.predict(x[test])])
        print(f"  probe {name}: UA {out[name]['ua']:.3f}", file=sys.stderr)
    return out


def audiollm_run(folder: Path, rows, held_out: set[str], lm_limit: int) -> dict:
    """One trained run on every held-out clip, from the feature cache (model scores only)."""
    from transformers import AutoTokenizer

    from agent.config import default_cache_dir
    from perception.audiollm import DualEncoderForEmotionReasoning, DualEncoderProcessor
    from perception.audiollm.modeling import resolve_language_model
    from perception.audiollm.run_folder import load_feature_norms
    from perception.finetune.datasets import Clip
    from perception.finetune.evaluation import (
        EvalItem,
        classification_report,
        running_normalized,
        score_items,
    )
    from perception.finetune.features import FeatureCache, WhisperFeatureExtractor

    model = DualEncoderForEmotionReasoning.from_pretrained(folder)
    config = model.config
    has_own = (folder / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(
        str(folder) if has_own else resolve_language_model(config.language_model)
    )
    processor = DualEncoderProcessor(config, tokenizer)
    cache_dir = default_cache_dir()
    cache = FeatureCache(cache_dir, WhisperFeatureExtractor(config, cache_dir))
    clips = [
        Clip(r.path, r.emotion, r.transcript, r.speaker, "crema-d") for r in rows if r.speaker in held_out
    ]
    clips = cache.warm(clips)
    items = [
        EvalItem(f.semantic, f.paralinguistic, c.emotion, c.speaker, f.head_input())
        for c in clips
        for f in [cache.get(c)]
    ]
    raw = items
    norms = load_feature_norms(folder) if config.speaker_norm else None
    if config.speaker_norm:
        items = running_normalized(config, norms, items)
    labels = tuple(config.labels)
    started = time.perf_counter()
    own = classification_report([i.emotion for i in items], score_items(model, processor, items), labels)
    own_s = time.perf_counter() - started
    result = {
        "score_source": config.score_source,
        "n": own["n"],
        "own_scores": own,
        "own_scores_s": round(own_s, 1),
    }
    if config.speaker_norm:  # each actor's clips cut into conversations of a few turns
        result["conversation_length_ua"] = {}
        for length in (1, 4, 10):
            chunked = running_normalized(config, norms, short_conversations(raw, length))
            scores = classification_report(
                [i.emotion for i in chunked], score_items(model, processor, chunked), labels
            )
            result["conversation_length_ua"][length] = scores["ua"]
    if lm_limit and config.score_source != "lm":
        picked = np.random.default_rng(0).choice(len(items), size=min(lm_limit, len(items)), replace=False)
        subset = [items[i] for i in sorted(picked)]
        truth = [i.emotion for i in subset]
        own_subset = score_items(model, processor, subset)
        config.score_source = "lm"  # this model instance is the benchmark's own
        lm = score_items(model, processor, subset)
        result["own_scores_same_subset"] = classification_report(truth, own_subset, labels)
        result["lm_label_likelihood"] = classification_report(truth, lm, labels)
    return result


def short_conversations(items: list, length: int) -> list:
    """The items with each speaker's clips, in conversation order, cut into conversations of ``length``
    turns (the speaker key gets the conversation's number)."""
    from dataclasses import replace

    out = list(items)
    seen: dict[str, int] = {}
    for i in conversation_order([it.speaker for it in items]):
        turn = seen.get(items[i].speaker, 0)
        seen[items[i].speaker] = turn + 1
        out[i] = replace(items[i], speaker=f"{items[i].speaker}#{turn // length}")
    return out


def end_to_end(settings: PerceptionSettings, sample) -> dict:
    from perception.registry import build_perceiver

    started = time.perf_counter()
    perceiver = build_perceiver(settings)
    load_s = time.perf_counter() - started
    stage_ms: dict[str, float] = {}
    original = perceiver.perceive_with_cues

    def timed(audio, sample_rate=16_000, baseline=None):
        perception, cues = original(audio, sample_rate, baseline)
        for stage, ms in perception.timings_ms.items():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
        return perception, cues

    perceiver.perceive_with_cues = timed  # type: ignore[method-assign]
    report = evaluate(perceiver, sample, progress=True)
    audio_s = sum(_duration(r.path) for r in sample)
    report["rtf_per_stage"] = {k: round(v / 1000 / audio_s, 4) for k, v in stage_ms.items()}
    report["load_s"] = round(load_s, 1)
    report.update(rss_mb())
    if getattr(perceiver, "max_new_tokens", 0) > 0:
        report["generation"] = perceiver.generation_stats.to_json()
    del perceiver
    gc.collect()
    return report


def _duration(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--run", action="append", default=[], metavar="NAME=FOLDER")
    parser.add_argument("--limit", type=int, default=120, help="held-out clips run end to end")
    parser.add_argument("--lm-limit", type=int, default=300, help="held-out clips scored by LM likelihood")
    parser.add_argument("--holdout-speakers", type=int, default=15)
    parser.add_argument("--no-classical-e2e", action="store_true")
    parser.add_argument("--no-probes", action="store_true", help="skip the encoder layer probes")
    parser.add_argument(
        "--gen-limit",
        type=int,
        default=20,
        help="of the end-to-end clips, how many to run again with the LM writing the reasoning",
    )
    parser.add_argument("--gen-tokens", type=int, default=24, help="reasoning tokens for that run")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "audiollm.json"))
    args = parser.parse_args()

    from perception.audiollm.perceiver import DEFAULT_RUN
    from perception.train_classical import validation_actors

    rows, _ = read_manifest(args.manifest)
    held_out = set(validation_actors([r.speaker for r in rows if r.speaker], n=args.holdout_speakers))
    runs = dict(spec.split("=", 1) for spec in args.run) or {"shipped": str(DEFAULT_RUN)}
    result: dict = {"held_out_speakers": sorted(held_out)}

    print("classical baselines (refit without the held-out actors) ...", file=sys.stderr)
    result["classical"] = classical_baselines(rows, held_out)
    if not args.no_probes:
        print("encoder probes (pooled tiny.en layers) ...", file=sys.stderr)
        result["probes"] = encoder_probes(rows, held_out)
    result["audiollm"] = {}
    for name, folder in runs.items():
        print(f"AudioLLM run {name} ({folder}) ...", file=sys.stderr)
        result["audiollm"][name] = audiollm_run(Path(folder), rows, held_out, args.lm_limit)
        gc.collect()

    sample = held_out_sample(rows, held_out, args.limit)
    result["end_to_end"] = {
        "audiollm": end_to_end(PerceptionSettings(estimator="audiollm"), sample),
    }
    if args.gen_limit:
        writes = PerceptionSettings(estimator="audiollm", reasoning_tokens=args.gen_tokens)
        result["end_to_end"][f"audiollm, LM writes ({args.gen_tokens} tokens)"] = end_to_end(
            writes, sample[: args.gen_limit]
        )
    if not args.no_classical_e2e:
        result["end_to_end"]["classical"] = end_to_end(PerceptionSettings(estimator="classical"), sample)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    print(f"wrote {args.out}")
    return 0


def _print(result: dict) -> None:
    c = result["classical"]
    print(f"held-out actors: {len(result['held_out_speakers'])}, clips: {c['_n']}")
    print(f"{'':46}{'UA':>7}{'WA':>7}{'F1':>7}")

    def line(name: str, s: dict) -> None:
        print(f"{name:<46}{s['ua']:>7.3f}{s['wa']:>7.3f}{s['macro_f1']:>7.3f}")

    for key, name in (
        ("egemaps_lr/per_clip", "eGeMAPS + LR"),
        ("egemaps_lr/speaker_norm", "eGeMAPS + LR, speaker-normalised"),
        ("egemaps_whisper_lr/per_clip", "eGeMAPS + Whisper LR (previous estimator)"),
        ("egemaps_whisper_lr/speaker_norm", "eGeMAPS + Whisper LR, speaker-normalised"),
    ):
        line(name, c[key])
    for name, s in result.get("probes", {}).items():
        line(f"probe: {name}, speaker-normalised", s)
    for name, run in result["audiollm"].items():
        line(f"AudioLLM {name} ({run['score_source']} scores)", run["own_scores"])
        for length, ua in run.get("conversation_length_ua", {}).items():
            print(f"  conversations of {length} turns: UA {ua:.3f}")
        if "lm_label_likelihood" in run:
            n = run["lm_label_likelihood"]["n"]
            line(f"  same, on {n} clips", run["own_scores_same_subset"])
            line(f"  LM label likelihood, on {n} clips", run["lm_label_likelihood"])
    for name, e in result["end_to_end"].items():
        line(f"end to end: {name} (n={e['n']})", e)
        stages = ", ".join(f"{k} {v:.3f}" for k, v in e["rtf_per_stage"].items())
        wer = "n/a" if e["wer"] is None else f"{e['wer']:.3f}"
        g = e["grounding"]
        print(f"    WER {wer}  grounding {g['verified']:.3f} of {g['claims']} claims  RTF {e['rtf']:.3f}")
        print(f"    RTF per stage: {stages}")
        rss, peak = e.get("rss_mb", 0), e.get("peak_rss_mb", 0)
        print(f"    RSS {rss:.0f} MB (peak {peak:.0f}); load {e['load_s']} s")
        if "generation" in e:
            gen = e["generation"]
            print(
                f"    LM-written evidence: {gen['verified']} of {gen['items']} items verified"
                f" ({gen['verified_share']:.2f}); reasoning as written on {gen['as_written']} of"
                f" {gen['turns']} turns; {gen['ms_per_token']} ms per token"
            )


if __name__ == "__main__":
    raise SystemExit(main())
