"""Where perception's models run: ``PerceptionSettings.device`` ("cpu", "cuda", "cuda:N" or "auto").

One reading of the setting for both runtimes: CTranslate2 (Whisper) wants a device kind and an index,
torch a ``torch.device``. "auto" is a GPU when the runtime can use one, else the CPU; anything else is
taken at its word, so a GPU that is asked for but missing fails at load time with the runtime's error
instead of quietly running on the CPU.
"""

from __future__ import annotations

from perception.base import PerceptionError


def parse_device(name: str) -> tuple[str, int]:
    """``("cpu" | "cuda" | "auto", index)`` of a device setting; :class:`PerceptionError` otherwise."""
    text = (name or "cpu").strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "auto") or (index and not index.isdigit()) or (index and kind != "cuda"):
        raise PerceptionError(f"unknown perception device {name!r} (use cpu, cuda, cuda:N or auto)")
    return kind, int(index or 0)


def ctranslate2_device(name: str) -> tuple[str, int, str]:
    """``(device, device_index, compute_type)`` for a faster-whisper model: int8 on the CPU (the shipped
    estimators' features were computed so), float16 on a GPU."""
    kind, index = parse_device(name)
    if kind == "auto":
        import ctranslate2

        kind = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return kind, index, "float16" if kind == "cuda" else "int8"


def torch_device(name: str):  # -> torch.device
    kind, index = parse_device(name)
    import torch

    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{index}" if kind == "cuda" else "cpu")
