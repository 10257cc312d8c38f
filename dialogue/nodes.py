"""The dialogue graph's nodes (plain async functions returning partial state updates) and its routers."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.graph import END
from langgraph.runtime import Runtime

from dialogue import memory, prompts
from dialogue.context import DialogueContext
from dialogue.llm import build_chat_model, with_token_limit
from dialogue.policies import choose_policy as choose_policy_name
from dialogue.policies import get_policy
from dialogue.reply_format import reply_system_prompt
from dialogue.safety import SAFETY_POLICY, SAFETY_REPLY
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
    """The default chat model (:class:`DialogueSettings`' defaults), built once; used when the context names
    none. The agent always passes the configured one."""
    from dialogue.config import DialogueSettings

    return build_chat_model(DialogueSettings())


def _context(runtime: Runtime[DialogueContext] | None) -> DialogueContext:
    context = getattr(runtime, "context", None)
    return context if isinstance(context, DialogueContext) else DialogueContext()


async def remember(state: State, runtime: Runtime[DialogueContext] | None = None) -> dict[str, Any]:
    """Record the user's turn (their message and how they sounded) and fold turns that left the LLM's
    window into the running summary (:func:`dialogue.memory.fold`, no model call)."""
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
    update: dict[str, Any] = {"messages": [message], "emotional_history": [entry], "policy": ""}
    earlier = [t for t in state.emotional_history if t["turn_id"] != state.turn_id]
    folded = memory.fold(earlier, state.messages, state.summary_turns, _context(runtime).history_turns)
    if folded is not None:
        update["summary"], update["summary_turns"] = folded
    return update


def route_turn(state: State) -> Literal["choose_policy", "__end__"]:
    """An empty turn (nothing was said) is remembered but not answered."""
    return "choose_policy" if state.user_text.strip() else END


async def choose_policy(state: State, runtime: Runtime[DialogueContext] | None = None) -> dict[str, Any]:
    """Choose the response policy: crisis language first (``safety``), then extension rules and the
    built-in rules on this turn's perception and the earlier turns' trajectory."""
    earlier = [t for t in state.emotional_history if t["turn_id"] != state.turn_id]
    name = choose_policy_name(state.perception, earlier, state.user_text, _context(runtime).rules)
    return {"policy": name, "emotional_history": [EmotionTurn(turn_id=state.turn_id, policy=name)]}


def route_policy(state: State) -> Literal["safety_reply", "next"]:
    """Safety turns go straight to the fixed reply (past every extension node); others go on."""
    return "safety_reply" if state.policy == SAFETY_POLICY else "next"


def _turn_of(message: AnyMessage) -> str:
    return str(message.id or "").rpartition(":")[0]


def conversation_window(
    messages: list[AnyMessage], history_turns: int, summary: str = ""
) -> list[AnyMessage]:
    """The messages the LLM sees: those of the last ``history_turns`` earlier turns plus the current user
    message. A ``summary`` of older turns opens the first user message it shows (user role: it quotes the
    user, so it never enters the system prompt)."""
    spoken = [m for m in messages if isinstance(m, HumanMessage | AIMessage) and str(m.content).strip()]
    turns = list(dict.fromkeys(_turn_of(m) for m in spoken if isinstance(m, HumanMessage)))
    keep = set(turns[-(max(0, history_turns) + 1) :])
    window = [m for m in spoken if _turn_of(m) in keep]
    if summary and window and isinstance(window[0], HumanMessage):
        first = window[0]
        window[0] = HumanMessage(content=f"({summary})\n\n{first.content}", id=first.id)
    return window


def _announce(runtime: Runtime[DialogueContext] | None, policy: str) -> None:
    """Tell ``stream_mode="custom"`` listeners the final policy, just before the reply is written."""
    writer = getattr(runtime, "stream_writer", None)
    if callable(writer):
        writer({"event": "policy", "policy": policy})


def _reply_message(state: State, text: str, policy: str) -> AIMessage:
    return AIMessage(
        content=text,
        id=assistant_message_id(state.turn_id),
        additional_kwargs={"policy": policy, "turn_id": state.turn_id},
    )


async def safety_reply(state: State, runtime: Runtime[DialogueContext] | None = None) -> dict[str, Any]:
    """The fixed safety text (:data:`dialogue.safety.SAFETY_REPLY`); no model is called."""
    _announce(runtime, SAFETY_POLICY)
    return {"messages": [_reply_message(state, SAFETY_REPLY, SAFETY_POLICY)]}


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
    if state.policy == SAFETY_POLICY:  # also when a custom graph routes a safety turn here
        return await safety_reply(state, runtime)
    context = _context(runtime)
    policy = get_policy(state.policy)
    _announce(runtime, policy.name)
    max_sentences, max_tokens = reply_limits(policy.name, context)
    llm = context.llm or default_chat_model()
    if getattr(llm, "conditioned", False):  # the reply model reads fields, not prose (dialogue.reply_format)
        content = reply_system_prompt(policy.name, state.perception, policy.instruction)
    else:
        content = prompts.system_prompt(policy, state.perception, context.persona, max_sentences)
    system = SystemMessage(content=content)
    shaper = ReplyShaper(max_sentences)
    stream = with_token_limit(llm, max_tokens).astream(
        [system, *conversation_window(state.messages, context.history_turns, state.summary)]
    )
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for chunk in stream:
            shaper.feed(str(chunk.content))
            if shaper.done:
                break
    shaper.finish()
    text = shaper.text or FALLBACK_REPLY
    return {"messages": [_reply_message(state, text, policy.name)]}
