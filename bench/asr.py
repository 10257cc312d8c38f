"""Whisper decoding windows on CREMA-D actors held out from training: WER, repetition loops and cost.

    python -m bench.asr [--limit 120] [--model tiny.en]

Whisper was trained on 30 s windows; a turn is padded with silence to fill one. Three ways to decode:

* **padded**: the standard pass, the encoder run over the whole padded window every turn;
* **spliced**: the encoder run over the speech alone, followed by the encoder states of
  silence for the positions after it (computed once); ``WhisperASR(spliced=True)``;
* **spliced+1s** (the default): as spliced, but the speech is encoded together with the first second of
  its padding, so the last words' states have seen the silence after them;
  ``WhisperASR(spliced=True, splice_context_s=1.0)``;
* **compact**: the speech's own encoder states and nothing after them (shown for why the silence matters).

Each runs on ``--limit`` single held-out clips (2-3 s) and on the same clips joined three at a time with
0.3 s gaps (8-9 s turns, several sentences). For each: WER, how many turns fell into a repetition loop
(zlib ratio above 2.4, which the product then decodes again with faster-whisper's temperature fallback,
not counted here) and the real-time factor of log-mel + encoder + greedy decoding on this machine.
With ``--perception`` the same held-out clips also go through the whole default perceiver once per
decoding (``EMO_PERCEPTION__ASR_SPLICED_PADDING`` false, then true), each speaker's clips as one
conversation, as ``emo-agent eval`` runs them: the WER and the emotion UA that follow from each transcript.
Writes ``bench/results/asr.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.perception import DEFAULT_MANIFEST, held_out_sample  # noqa: E402
from perception.asr import MAX_COMPRESSION_RATIO, WhisperASR, _compression_ratio  # noqa: E402
from perception.evaluation import read_manifest, word_error_rate  # noqa: E402

MODES = ("padded", "spliced", "spliced+1s", "compact")
CONTEXT_S = 1.0  # the "spliced+1s" mode: this much of the padding encoded with the speech


def decode(asr: WhisperASR, audio: np.ndarray, mode: str) -> str:
    import ctranslate2

    mel = asr.mel(audio)
    if mode == "padded":
        return asr._decode(asr._encode_window(mel))
    if mode == "spliced+1s":
        asr.splice_context_s = CONTEXT_S
        return asr._decode(asr.spliced_window(asr.context_states(mel)))
    states = asr.encode_compact(audio, mel)
    if mode == "spliced":
        return asr._decode(asr.spliced_window(states))
    return asr._decode(ctranslate2.StorageView.from_array(np.ascontiguousarray(states[None])))


def run(asr: WhisperASR, turns: list[tuple[np.ndarray, str]], mode: str) -> dict:
    audio_s = sum(len(a) for a, _ in turns) / 16_000
    started = time.perf_counter()
    hypotheses = [decode(asr, audio, mode) for audio, _ in turns]
    elapsed = time.perf_counter() - started
    loops = sum(1 for h in hypotheses if h and _compression_ratio(h) > MAX_COMPRESSION_RATIO)
    return {
        "wer": round(word_error_rate([t for _, t in turns], hypotheses), 4),
        "loops": loops,
        "turns": len(turns),
        "rtf": round(elapsed / audio_s, 4),
        "mean_turn_s": round(audio_s / len(turns), 2),
    }


def perceive_both(rows) -> dict:
    """The default perceiver's eval report (WER, UA, WA, macro-F1, RTF) with each decoding."""
    from perception.config import PerceptionSettings
    from perception.evaluation import evaluate
    from perception.registry import build_perceiver

    out = {}
    decodings = (("standard", False, 0.0), ("spliced", True, 0.0), ("spliced+1s", True, CONTEXT_S))
    for mode, spliced, context_s in decodings:
        print(f"perceiver: {mode} ...", file=sys.stderr)
        settings = PerceptionSettings(asr_spliced_padding=spliced, asr_splice_context_s=context_s)
        perceiver = build_perceiver(settings)
        report = evaluate(perceiver, rows, progress=False)
        out[mode] = {k: report[k] for k in ("n", "wer", "ua", "wa", "macro_f1", "rtf")}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--limit", type=int, default=120, help="held-out clips")
    parser.add_argument("--holdout-speakers", type=int, default=15)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "asr.json"))
    parser.add_argument(
        "--perception", action="store_true", help="also the default perceiver's WER and UA per decoding"
    )
    args = parser.parse_args()

    from perception.audio import load_audio
    from perception.train_classical import validation_actors

    rows, _ = read_manifest(args.manifest)
    held_out = set(validation_actors([r.speaker for r in rows if r.speaker], n=args.holdout_speakers))
    sample = held_out_sample([r for r in rows if r.transcript], held_out, args.limit)
    clips = [(load_audio(r.path), r.transcript) for r in sample]
    gap = np.zeros(4_800, dtype=np.float32)
    joined = [
        (
            np.concatenate([part for audio, _ in clips[i : i + 3] for part in (audio, gap)]),
            " ".join(text for _, text in clips[i : i + 3]),
        )
        for i in range(0, len(clips) - 2, 3)
    ]
    asr = WhisperASR(args.model)
    asr.silence_states()  # computed once at load in the product
    decode(asr, clips[0][0], "padded")  # warm-up
    result: dict = {"model": args.model, "held_out_speakers": sorted(held_out)}
    for name, turns in (("single clips", clips), ("three clips joined", joined)):
        result[name] = {}
        for mode in MODES:
            print(f"{name}: {mode} ...", file=sys.stderr)
            result[name][mode] = run(asr, turns, mode)

    if args.perception:
        result["perception"] = perceive_both(sample)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name in ("single clips", "three clips joined"):
        first = result[name]["padded"]
        print(f"{name} ({first['turns']} turns, {first['mean_turn_s']} s each)")
        for mode in MODES:
            r = result[name][mode]
            print(f"  {mode:10s} WER {r['wer']:.3f}  loops {r['loops']:3d}  RTF {r['rtf']:.3f}")
    for mode, r in result.get("perception", {}).items():
        print(f"perceiver, {mode:8s} decoding: WER {r['wer']:.4f}  UA {r['ua']:.4f}  RTF {r['rtf']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
