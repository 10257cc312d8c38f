"""The reply model on CTranslate2: the shipped LoRA adapter merged into the bundled SmolLM2 once, converted to
an int8 CTranslate2 ``Generator`` (cached under ``cache_dir/llm/``), decoded token by token.

On a 2-core CPU, one thread, SmolLM2-135M int8 decodes at about 40 tokens/s with the first token after
60-120 ms, against about 9 tokens/s for the transformers loop (``bench/replies.py`` measures both).
:class:`ReplyChatModel` is a LangChain chat model (it reuses :class:`dialogue.local_llm.LocalChatModel`'s
streaming, cancellation and generation thread) with a decoding guard: every 4-token sequence of the user's
turns in view (and the summary of older ones) and of the system line, and every 3-token sequence of the
earlier replies, is suppressed (CTranslate2's ``suppress_sequences``), and no 3-gram repeats within the
reply, so it cannot copy the user, repeat itself or recite its prompt. Cheerful words ("great", "glad", ...)
are suppressed when the turn may be upset: a policy for upset turns (empathize, de_escalate), an upset
feeling or a valence below +0.2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from dialogue.llm_weights import CONTROL_STRINGS, _role, sanitize_content
from dialogue.local_llm import LocalChatModel
from dialogue.reply_choice import ends_first_sentence, pick_continuation, shared_embedder
from dialogue.reply_guard import BLOCK_N, REPLY_BLOCK_N, UPBEAT_WORDS, blocked_sequences, needs_gentleness
from dialogue.text import first_sentence, split_sentences
from perception.bundled_lm import _lock_file, convert_bundled_model

log = logging.getLogger(__name__)

CANDIDATE_TEMPERATURE = 0.8  # sampled continuations (top-k as the reply's); the first sentence is greedy
SHIPPED_ADAPTER = Path(__file__).resolve().parent / "assets" / "reply"
_COMPLETE = "conversion-complete"


def _adapter_digest(adapter: Path) -> str:
    h = hashlib.sha1()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update((adapter / name).read_bytes())
    return h.hexdigest()[:12]


def prepare_reply_model(adapter: Path | None, cache_dir: Path, base: Path | None = None) -> Path:
    """The CTranslate2 folder of ``adapter`` merged into the bundled model (``adapter`` ``None``: the
    bundled model as it is), converted on first use under a lock and reused after."""
    from perception.config import default_cache_dir

    cache_dir = Path(cache_dir or default_cache_dir())
    name = "smollm2-135m" if adapter is None else f"reply-{_adapter_digest(Path(adapter))}"
    target = cache_dir / "llm" / f"{name}-ct2-int8"
    if (target / _COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock_file(target.parent / f"{target.name}.lock"):
        if (target / _COMPLETE).is_file():
            return target
        started = time.perf_counter()
        base = Path(base) if base is not None else convert_bundled_model(cache_dir)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        source = base
        if adapter is not None:
            source = tmp / "merged"
            _merge(Path(adapter), base, source)
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(str(source), load_as_float16=False).convert(
            str(tmp / "ct2"), quantization="int8", force=True
        )
        out = tmp / "ct2"
        for file in Path(source).iterdir():  # the tokenizer travels with the converted model
            if file.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copy2(file, out / file.name)
        (out / _COMPLETE).write_text(json.dumps({"adapter": str(adapter), "base": str(base)}) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("reply model converted to CTranslate2 in %.1f s", time.perf_counter() - started)
    return target


def _merge(adapter: Path, base: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


@dataclass
class LoadedGenerator:
    generator: Any
    tokenizer: Any
    end_tokens: list[str]
    load_s: float


_loaded: dict[tuple[str, int], LoadedGenerator] = {}
_load_lock = threading.Lock()


def load_generator(model_dir: Path, threads: int = 1) -> LoadedGenerator:
    """A CTranslate2 generator and its tokenizer, loaded once per process and thread count."""
    key = (str(model_dir), threads)
    with _load_lock:
        if key not in _loaded:
            import ctranslate2
            from transformers import AutoTokenizer

            started = time.perf_counter()
            generator = ctranslate2.Generator(
                str(model_dir), device="cpu", compute_type="int8", intra_threads=threads
            )
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            vocab = set(tokenizer.get_vocab())
            ends = [t for t in CONTROL_STRINGS if t in vocab] or [tokenizer.eos_token]
            _loaded[key] = LoadedGenerator(generator, tokenizer, ends, time.perf_counter() - started)
        return _loaded[key]


class ReplyChatModel(LocalChatModel):
    """The reply model as a LangChain chat model, decoded by CTranslate2 (see the module docstring)."""

    adapter: Path | None = SHIPPED_ADAPTER
    """The reply model's LoRA adapter (``None``: the bundled instruct model itself, on the same engine)."""
    model_dir: Path | None = None
    """An already converted CTranslate2 folder; overrides ``adapter``."""
    top_k: int = 40
    guard: bool = True
    """Suppress copies of the user's turn, earlier replies and the system line (module docstring)."""
    candidates: int = 1
    """Continuations of the first sentence to choose from, the model's own included
    (:mod:`dialogue.reply_choice`); 1: always the model's own."""

    @property
    def conditioned(self) -> bool:
        """Whether the model reads :mod:`dialogue.reply_format`'s conditioning line (a trained adapter)."""
        return self.adapter is not None or self.model_dir is not None

    @property
    def _llm_type(self) -> str:
        return "emo-agent-reply-ct2"

    def warm_up(self) -> None:
        super().warm_up()
        if self.candidates > 1:  # the embedder that chooses the continuation, loaded before a turn needs it
            shared_embedder()(["Hello."])

    def load(self) -> LoadedGenerator:  # type: ignore[override]
        model_dir = self.model_dir or prepare_reply_model(self.adapter, self.cache_dir)
        return load_generator(model_dir, self.num_threads)

    def _prompt_tokens(self, loaded: LoadedGenerator, messages: Sequence[BaseMessage]) -> list[str]:
        chat = [{"role": _role(m), "content": sanitize_content(str(m.content))} for m in messages]
        ids = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return loaded.tokenizer.convert_ids_to_tokens([int(i) for i in ids])

    def guard_sequences(self, loaded: LoadedGenerator, messages: Sequence[BaseMessage]) -> list[list[str]]:
        """The token sequences this reply may not produce: every :data:`BLOCK_N`-gram of the user turns in
        view (the running summary of older ones included) and the system message, tokenised as they would
        be mid-reply, and every :data:`REPLY_BLOCK_N`-gram of the earlier assistant turns' sentences, each
        tokenised both as a reply's start and mid-reply; cheerful words when :func:`needs_gentleness`."""
        tokenize = loaded.tokenizer.tokenize
        token_lists: dict[bool, list[list[str]]] = {False: [], True: []}  # by "is an earlier reply"
        for message in messages:
            reply = _role(message) == "assistant"
            for line in str(message.content).splitlines():
                # an earlier reply's sentences each as a reply would start them, and as mid-reply
                for part in split_sentences(line) if reply else [line]:
                    if part.strip():
                        token_lists[reply] += [tokenize(" " + part.strip()), tokenize(part.strip())]
        blocked = blocked_sequences(token_lists[False], BLOCK_N)
        blocked += blocked_sequences(token_lists[True], REPLY_BLOCK_N)
        system = next((str(m.content) for m in messages if _role(m) == "system"), "")
        if needs_gentleness(system):  # no cheering at someone upset (dialogue.reply_guard.UPBEAT_WORDS)
            for word in UPBEAT_WORDS:
                for form in (word, word.capitalize()):
                    blocked += [tokenize(" " + form), tokenize(form)]
        return blocked

    def _token_pieces(
        self,
        prompt: str | Sequence[BaseMessage],
        stop_strings: Sequence[str] | None,
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event,
    ) -> Iterator[str]:
        import ctranslate2

        loaded = self.load()
        if isinstance(prompt, str):
            tokens = loaded.tokenizer.tokenize(prompt)
            suppress: list[list[str]] = []
        else:
            tokens = self._prompt_tokens(loaded, prompt)
            suppress = self.guard_sequences(loaded, prompt) if self.guard else []
        ctranslate2.set_random_seed(self.seed)
        steps = loaded.generator.generate_tokens(
            tokens,
            max_length=max_new_tokens or self.max_new_tokens,
            sampling_temperature=max(self.temperature, 1e-5),
            sampling_topk=self.top_k if self.temperature > 0 else 1,
            sampling_topp=self.top_p,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=3,
            suppress_sequences=suppress or None,
            end_token=loaded.end_tokens,
        )
        choose = self.candidates > 1 and not isinstance(prompt, str) and self.guard
        generated: list[int] = []
        first: int | None = None  # tokens of the first sentence, once it is written
        emitted = ""
        try:
            for step in steps:
                if stop.is_set():
                    return
                generated.append(int(step.token_id))
                text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue
                if stop_strings and any(s in text for s in stop_strings):
                    if first is None:
                        return
                    break
                if first is not None:
                    continue  # the rest waits for the choice of continuation
                piece, emitted = text[len(emitted) :], text
                if choose and ends_first_sentence(text):
                    first = len(generated)
                    piece += " "  # so the sentence splitter sees the first sentence end now
                if piece:
                    yield piece
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()
        if first is None or first == len(generated) or stop.is_set():
            return
        own = loaded.tokenizer.decode(generated, skip_special_tokens=True)[len(emitted) :]
        for s in stop_strings or ():
            own = own.split(s, 1)[0]
        yield self._continuation(
            loaded,
            prompt,
            tokens,
            generated[:first],
            emitted,
            own,
            suppress,
            max_new_tokens,
        )

    def _continuation(
        self,
        loaded: LoadedGenerator,
        messages: Sequence[BaseMessage],
        prompt_tokens: list[str],
        first_ids: list[int],
        first_text: str,
        own: str,
        suppress: list[list[str]],
        max_new_tokens: int | None,
    ) -> str:
        """The second sentence on: the model's own continuation ``own`` or sampled ones
        (:mod:`dialogue.reply_choice`), whichever makes the reply closer to the user's turn."""
        budget = (max_new_tokens or self.max_new_tokens) - len(first_ids)
        prefix = loaded.tokenizer.convert_ids_to_tokens(first_ids)
        results = loaded.generator.generate_batch(
            [prompt_tokens + prefix] * (self.candidates - 1),
            max_length=max(1, budget),
            sampling_temperature=CANDIDATE_TEMPERATURE,
            sampling_topk=self.top_k,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=3,
            suppress_sequences=suppress or None,
            end_token=loaded.end_tokens,
            include_prompt_in_result=False,
        )
        sampled = [loaded.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True) for r in results]
        options = [first_sentence(own)] + [first_sentence(s) for s in sampled if s.strip()]
        user = next((str(m.content) for m in reversed(messages) if _role(m) == "user"), "")
        return options[pick_continuation(user, first_text, options, shared_embedder())].lstrip()
