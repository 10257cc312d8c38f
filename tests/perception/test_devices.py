"""The device setting, read the same way for CTranslate2 and torch."""

from __future__ import annotations

import pytest

from perception.base import PerceptionError
from perception.devices import ctranslate2_device, parse_device, torch_device


def test_device_names() -> None:
    assert parse_device("cpu") == ("cpu", 0)
    assert parse_device("CUDA:1") == ("cuda", 1)
    assert parse_device("") == ("cpu", 0)
    for bad in ("gpu", "cuda:x", "cpu:1", "tpu:0"):
        with pytest.raises(PerceptionError):
            parse_device(bad)


def test_cpu_is_int8_and_auto_falls_back_to_the_cpu_without_a_gpu() -> None:
    import torch

    assert ctranslate2_device("cpu") == ("cpu", 0, "int8")
    assert ctranslate2_device("cuda:2") == ("cuda", 2, "float16")
    if not torch.cuda.is_available():
        assert ctranslate2_device("auto")[0] == "cpu"
        assert torch_device("auto") == torch.device("cpu")
    assert torch_device("cuda:1") == torch.device("cuda:1")
