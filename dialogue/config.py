"""The dialogue section of the configuration tree (``EMO_DIALOGUE__*``).

A plain model: the dialogue package never reads the environment; ``agent.config.Settings`` composes this
section into the one ``EMO_`` tree and passes it in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DialogueSettings(BaseModel):
    """The LangGraph dialogue graph and its LLM."""

    # "reply": the reply model (SmolLM2-135M-Instruct fine-tuned on EmpatheticDialogues, a LoRA adapter
    # shipped in dialogue/assets/reply) on CTranslate2, conditioned on the policy and the perception;
    # "local": the bundled SmolLM2-135M-Instruct through transformers with prose prompts; "openai": any
    # OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server) at ``openai_base_url``.
    llm_backend: Literal["reply", "local", "openai"] = "reply"
    # The reply model's LoRA adapter (``emo-agent train-dialogue``'s OUT/final); empty: the shipped one.
    reply_adapter: str = ""
    local_model: str = "smollm2-135m"
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_model: str = "llama3.2"
    openai_api_key: str = "not-needed"
    max_new_tokens: int = 60
    # Sampling temperature of the local and openai backends.
    temperature: float = 0.7
    # The reply model's (0: greedy). On held-out conversations (bench/replies.py, a tuning slice) greedy
    # decoding came closest to the human listener (1.63x the generic reply against 1.56x at 0.7), and the
    # decoding guard keeps it from repeating itself.
    reply_temperature: float = 0.0
    # Continuations of the reply's first sentence to choose from by relevance to the user's turn, the
    # model's own included (dialogue/reply_choice.py); 1: off, since 2 measured ~160 ms later first audio.
    reply_candidates: int = Field(default=1, ge=1)
    seed: int = 0
    # CPU threads of the local models' generation (the reply model's CTranslate2 generator, the bundled
    # LLM's torch). docs/testing.md has the measurement behind the default.
    llm_threads: int = Field(default=1, ge=1)
    # Earlier exchanges the LLM sees (older ones are in the running summary). The reply model was trained with
    # two; one measured as well (docs/dialogue.md), and each exchange lengthens the prompt to prefill.
    history_turns: int = 1
    # Seconds a session's history lives in Redis after its last turn (0: forever).
    session_ttl_s: int = 7 * 24 * 3600
    # Sessions whose history is kept in memory (the most recently active; others load from Redis on use).
    # Replies read the history there, so they go on while Redis is down (dialogue/checkpoint.py).
    memory_sessions: int = Field(default=1000, ge=1)
    # Checkpoint writes that may wait in memory while Redis is unreachable (about 16 per turn); when full,
    # the oldest is dropped and logged.
    write_queue: int = Field(default=20_000, ge=1)
    # Dialogue extensions to load, as "module:function" (see docs/extending.md), e.g.
    # EMO_DIALOGUE__EXTENSIONS='["examples.checkin:register"]'.
    extensions: list[str] = Field(default_factory=list)
    # Also load extensions that installed packages declare under the "emo_agent.dialogue" entry point group.
    extension_entry_points: bool = True
