"""Run-time choices for the dialogue graph, passed as ``context=`` when it is invoked.

Unlike the state, the context is not stored in checkpoints: it says how this process answers (persona, LLM,
lengths), not what was said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dialogue import prompts

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from dialogue.policies import Rule


@dataclass(kw_only=True)
class DialogueContext:
    """Per-run configuration of :data:`dialogue.graph.builder`."""

    llm: BaseChatModel | None = None
    """The chat model that writes replies. ``None``: the bundled local model with the default settings."""
    persona: str = prompts.DEFAULT_PERSONA
    """Who the assistant is; the first paragraph of every system prompt."""
    max_sentences: int | None = None
    """Upper bound on reply sentences over every policy's own limit (``None``: the policy decides)."""
    max_new_tokens: int = 60
    """Upper bound on generated tokens over every policy's own limit."""
    history_turns: int = 6
    """Earlier turns (user + assistant pairs) shown to the LLM; older ones go into ``State.summary``."""
    rules: Sequence[Rule] = ()
    """Extension policy-selection rules (:class:`dialogue.extensions.Registry`), applied after safety."""
