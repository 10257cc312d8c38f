"""The local backend: :class:`LocalChatModel`, a LangChain chat model decoding a small instruct LLM
in-process (transformers, CPU), token by token, on one dedicated generation thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from dialogue.llm_weights import BUNDLED_MODEL, LoadedModel, _role, load_model, sanitize_content

if TYPE_CHECKING:
    import torch


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
