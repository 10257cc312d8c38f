"""Dialogue LLM benchmark: load time, time to first token, time to first sentence and decoding speed.

    python bench/dialogue.py [--threads 1] [--max-new-tokens 60] [--runs 6]

Runs the configured local model (default: the bundled SmolLM2-135M-Instruct) on six short user turns, each
with the system prompt of the policy the product would choose, the way :mod:`dialogue.nodes` calls it.
"First sentence" is when the first complete sentence is released by the reply shaper, i.e. when speech
synthesis can start. The same turns are then played through the whole reply path the voice layer uses
(:class:`dialogue.engine.DialogueEngine` on the compiled graph, in-memory checkpointer, the voice layer's
:class:`voice.sentences.SentenceSplitter`): time from ``reply()`` to the first ``TextDelta`` and to the
first sentence handed to TTS, graph and policy overhead included. Prints a table and writes
``bench/results/dialogue.json``. The machine's load average is recorded with the figures, since other work
on the cores changes them a lot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402
from langgraph.checkpoint.memory import MemorySaver  # noqa: E402

from agent.config import Settings  # noqa: E402
from dialogue import prompts  # noqa: E402
from dialogue.context import DialogueContext  # noqa: E402
from dialogue.engine import DialogueEngine  # noqa: E402
from dialogue.events import TextDelta  # noqa: E402
from dialogue.graph import build_graph  # noqa: E402
from dialogue.llm import BUNDLED_MODEL, LocalChatModel, convert_bundled_model, load_model  # noqa: E402
from dialogue.policies import choose_policy, get_policy  # noqa: E402
from dialogue.state import PerceptionSummary  # noqa: E402
from dialogue.text import ReplyShaper  # noqa: E402
from perception.types import Emotion, Perception  # noqa: E402
from voice.sentences import SentenceSplitter  # noqa: E402

TURNS: list[tuple[str, str, float, float]] = [
    ("I lost my job today and I don't know what to do.", "sad", -0.7, -0.2),
    ("This is the third time they cancelled my train! I'm furious.", "angry", -0.8, 0.8),
    ("I'm scared about the surgery tomorrow.", "fear", -0.6, 0.4),
    ("I finally finished my thesis!", "happy", 0.8, 0.5),
    ("What's a good way to cook rice?", "neutral", 0.0, 0.0),
    ("I think I'm feeling a bit better than yesterday.", "neutral", 0.2, -0.1),
]


def summary(label: str, valence: float, arousal: float) -> PerceptionSummary:
    return PerceptionSummary(label=label, scores={label: 0.8}, valence=valence, arousal=arousal)


async def one_turn(model: LocalChatModel, text: str, perception: PerceptionSummary) -> dict[str, float | str]:
    policy = get_policy(choose_policy(perception, []))
    system = prompts.system_prompt(policy, perception, prompts.DEFAULT_PERSONA, policy.max_sentences)
    shaper = ReplyShaper(policy.max_sentences)
    started = time.perf_counter()
    first_token = first_sentence = None
    tokens = 0
    async for chunk in model.astream([SystemMessage(system), HumanMessage(text)]):
        now = time.perf_counter()
        tokens += 1
        first_token = first_token or now
        shaper.feed(str(chunk.content))
        if first_sentence is None and (shaper.done or any(c in shaper.text for c in ".!?")):
            first_sentence = now
    shaper.finish()
    end = time.perf_counter()
    first_token = first_token or end
    decode_s = end - first_token
    return {
        "policy": policy.name,
        "ttft_ms": (first_token - started) * 1000,
        "first_sentence_ms": ((first_sentence or end) - started) * 1000,
        "total_ms": (end - started) * 1000,
        "tokens": tokens,
        "tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0,
        "reply": shaper.text,
    }


async def engine_turn(engine: DialogueEngine, turn_id: str, text: str, label: str, valence: float,
                      arousal: float) -> dict[str, float | str]:  # fmt: skip
    """One turn through DialogueEngine.reply, as voice/pipeline.py consumes it."""
    emotion = Emotion(label=label, scores={label: 1.0}, valence=valence, arousal=arousal)
    perception = Perception(transcript=text, emotion=emotion, reasoning="bench", model="bench")
    splitter = SentenceSplitter()
    started = time.perf_counter()
    first_delta = first_sentence = None
    policy = ""
    async for event in engine.reply("bench", turn_id, text, perception):
        if isinstance(event, TextDelta) and event.text:
            now = time.perf_counter()
            first_delta = first_delta or now
            if first_sentence is None and splitter.push(event.text):
                first_sentence = now
        policy = getattr(event, "policy", policy)
    end = time.perf_counter()
    return {
        "policy": policy,
        "ttft_ms": ((first_delta or end) - started) * 1000,
        "first_sentence_ms": ((first_sentence or end) - started) * 1000,
        "total_ms": (end - started) * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for generation")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--runs", type=int, default=len(TURNS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dialogue.json")
    args = parser.parse_args()

    settings = Settings()
    source = settings.dialogue.local_model
    converted_before = (settings.cache_dir / "llm" / BUNDLED_MODEL / "conversion-complete").is_file()
    convert_s = None
    if source == BUNDLED_MODEL and not converted_before:
        started = time.perf_counter()
        convert_bundled_model(settings.cache_dir)
        convert_s = time.perf_counter() - started
    started = time.perf_counter()
    import torch  # noqa: F401  (imports are timed apart: in the server perception has paid for them)
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    load_model(source, settings.cache_dir)
    load_s = time.perf_counter() - started

    model = LocalChatModel(
        model_source=source,
        cache_dir=settings.cache_dir,
        max_new_tokens=args.max_new_tokens,
        temperature=settings.dialogue.temperature,
        seed=settings.dialogue.seed,
        num_threads=args.threads,
    )
    started = time.perf_counter()
    await asyncio.to_thread(model.warm_up)
    warm_up_s = time.perf_counter() - started

    results = []
    for text, label, valence, arousal in (TURNS * 2)[: args.runs]:
        row = await one_turn(model, text, summary(label, valence, arousal))
        results.append(row)
        print(
            f"{row['policy']:<12} ttft {row['ttft_ms']:7.0f} ms  "
            f"first sentence {row['first_sentence_ms']:7.0f} ms  "
            f"{row['tokens_per_s']:5.1f} tok/s  {row['reply']!r}"
        )

    # the whole reply path: graph (policy node, memory), engine events, the voice layer's sentence splitter
    engine = DialogueEngine(
        build_graph(MemorySaver()), DialogueContext(llm=model, max_new_tokens=args.max_new_tokens)
    )
    engine_rows = []
    for i, (text, label, valence, arousal) in enumerate((TURNS * 2)[: args.runs]):
        row = await engine_turn(engine, f"t{i}", text, label, valence, arousal)
        engine_rows.append(row)
        print(
            f"engine {row['policy']:<12} first delta {row['ttft_ms']:7.0f} ms  "
            f"first sentence to TTS {row['first_sentence_ms']:7.0f} ms"
        )

    def median(key: str, rows: list[dict] = results) -> float:
        return round(statistics.median(float(r[key]) for r in rows), 1)

    report = {
        "model": source,
        "threads": args.threads,
        "max_new_tokens": args.max_new_tokens,
        "convert_s": None if convert_s is None else round(convert_s, 2),
        "import_s": round(import_s, 2),
        "load_s": round(load_s, 2),
        "warm_up_s": round(warm_up_s, 2),
        "ttft_ms_median": median("ttft_ms"),
        "first_sentence_ms_median": median("first_sentence_ms"),
        "tokens_per_s_median": median("tokens_per_s"),
        "total_ms_median": median("total_ms"),
        "engine_ttft_ms_median": median("ttft_ms", engine_rows),
        "engine_first_sentence_ms_median": median("first_sentence_ms", engine_rows),
        "runs": results,
        "engine_runs": engine_rows,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
    }
    print(
        f"\nimports {report['import_s']} s, load {report['load_s']} s (convert {report['convert_s']} s), "
        f"warm-up {report['warm_up_s']} s; "
        f"median ttft {report['ttft_ms_median']} ms, first sentence {report['first_sentence_ms_median']} ms, "
        f"{report['tokens_per_s_median']} tok/s (load average {report['machine']['load_average_1m']}); "
        f"through the engine: first delta {report['engine_ttft_ms_median']} ms, "
        f"first sentence {report['engine_first_sentence_ms_median']} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
