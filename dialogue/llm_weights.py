"""The dialogue LLM's weights: loading a model once per process (see :mod:`dialogue.llm`). The bundled
SmolLM2's GGUF is found and converted by :mod:`perception.bundled_lm`, shared with the AudioLLM."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from perception.bundled_lm import (
    BUNDLED_MODEL,
    convert_bundled_model,
)

log = logging.getLogger(__name__)

# Chat-template control strings. They are removed from message contents before templating, so text a user
# says cannot open a new system turn, and they end a reply when the model emits them as plain text.
CONTROL_STRINGS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")

# ----------------------------------------------------------------------------------------------- loading


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
            from perception.config import default_cache_dir

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
