"""The dialogue graph's nodes (plain async functions returning partial state updates) and its router."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.graph import END
from langgraph.runtime import Runtime

from dialogue import prompts
from dialogue.context import DialogueContext
from dialogue.llm import build_chat_model, with_token_limit
from dialogue.policies import choose_policy as choose_policy_name
from dialogue.policies import get_policy
from dialogue.state import EmotionTurn, State
from dialogue.text import ReplyShaper

# Said when the model produced nothing usable, so a turn never ends in silence.
FALLBACK_REPLY = "I'm here with you. Could you say that again?"


def user_message_id(turn_id: str) -> str:
    return f"{turn_id}:user"


def assistant_message_id(turn_id: str) -> str:
    return f"{turn_id}:assistant"


@functools.cache
def default_chat_model() -> BaseChatModel:
    """The chat model from the environment's settings, built once (used when the context names none)."""
    from agent.config import Settings

    return build_chat_model(Settings())


def _context(runtime: Runtime[DialogueContext] | None) -> DialogueContext:
    context = getattr(runtime, "context", None)
    return context if isinstance(context, DialogueContext) else DialogueContext()


async def remember(state: State) -> dict[str, Any]:
    """Record the user's turn: their message and how they sounded."""
    perception = state.perception
    entry = EmotionTurn(
        turn_id=state.turn_id,
        label=perception["label"] if perception else None,
        valence=perception["valence"] if perception else None,
        arousal=perception["arousal"] if perception else None,
        policy="",
        interrupted=False,
    )
    message = HumanMessage(content=state.user_text, id=user_message_id(state.turn_id))
    return {"messages": [message], "emotional_history": [entry], "policy": ""}


def route_turn(state: State) -> Literal["choose_policy", "__end__"]:
    """An empty turn (nothing was said) is remembered but not answered."""
    return "choose_policy" if state.user_text.strip() else END


async def choose_policy(state: State) -> dict[str, Any]:
    """Choose the response policy from this turn's perception and the earlier turns' trajectory."""
    earlier = [t for t in state.emotional_history if t["turn_id"] != state.turn_id]
    name = choose_policy_name(state.perception, earlier)
    return {"policy": name, "emotional_history": [EmotionTurn(turn_id=state.turn_id, policy=name)]}


def conversation_window(messages: list[AnyMessage], history_turns: int) -> list[AnyMessage]:
    """The messages the LLM sees: the last ``history_turns`` exchanges plus the current user message."""
    spoken = [m for m in messages if isinstance(m, HumanMessage | AIMessage) and str(m.content).strip()]
    return spoken[-(2 * max(0, history_turns) + 1) :]


def reply_limits(policy_name: str, context: DialogueContext) -> tuple[int, int]:
    """(max sentences, max new tokens) for a reply: the policy's limits, capped by the context's."""
    policy = get_policy(policy_name)
    max_sentences = min(policy.max_sentences, context.max_sentences or policy.max_sentences)
    return max_sentences, min(policy.max_new_tokens, context.max_new_tokens)


async def respond(state: State, runtime: Runtime[DialogueContext]) -> dict[str, Any]:
    """Write the reply with the LLM, the chosen policy in the system prompt.

    Tokens stream to ``stream_mode="messages"`` as the model produces them; generation stops as soon as
    the policy's sentence limit is reached. The stored reply is the cleaned text
    (:class:`dialogue.text.ReplyShaper`).
    """
    context = _context(runtime)
    policy = get_policy(state.policy)
    max_sentences, max_tokens = reply_limits(policy.name, context)
    system = SystemMessage(
        content=prompts.system_prompt(policy, state.perception, context.persona, max_sentences)
    )
    llm = context.llm or default_chat_model()
    shaper = ReplyShaper(max_sentences)
    stream = with_token_limit(llm, max_tokens).astream(
        [system, *conversation_window(state.messages, context.history_turns)]
    )
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for chunk in stream:
            shaper.feed(str(chunk.content))
            if shaper.done:
                break
    shaper.finish()
    text = shaper.text or FALLBACK_REPLY
    reply = AIMessage(
        content=text,
        id=assistant_message_id(state.turn_id),
        additional_kwargs={"policy": policy.name, "turn_id": state.turn_id},
    )
    return {"messages": [reply]}
