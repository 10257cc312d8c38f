"""The compiled graph with an in-memory checkpointer: scripted LLM (fast) and the bundled LLM (slow)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.memory import MemorySaver

from dialogue.context import DialogueContext
from dialogue.graph import build_graph, builder

from .conftest import ScriptedChatModel, summary


async def run_turn(graph, context, thread: str, turn_id: str, text: str, perception) -> tuple[list, list]:
    deltas, updates = [], []
    async for mode, payload in graph.astream(
        {"turn_id": turn_id, "user_text": text, "perception": perception},
        {"configurable": {"thread_id": thread}},
        context=context,
        stream_mode=["messages", "updates"],
    ):
        if mode == "messages":
            chunk, meta = payload
            if isinstance(chunk, AIMessageChunk) and meta["langgraph_node"] == "respond":
                deltas.append(chunk.content)
        else:
            updates.append(payload)
    return deltas, updates


async def test_two_turns_are_remembered_and_streamed() -> None:
    graph = builder.compile(checkpointer=MemorySaver())
    llm = ScriptedChatModel(reply="I hear you. Tell me more.")
    context = DialogueContext(llm=llm)
    deltas, updates = await run_turn(graph, context, "s", "t1", "I feel low.", summary("sad", -0.6, -0.1))
    assert len(deltas) > 1  # token by token
    assert [next(iter(u)) for u in updates] == ["remember", "choose_policy", "respond"]
    assert updates[1]["choose_policy"]["policy"] == "empathize"
    await run_turn(graph, context, "s", "t2", "Still low.", summary("sad", -0.6, 0.0))
    await run_turn(graph, context, "s", "t3", "Why is this happening?!", summary("sad", -0.5, 0.3))
    state = (await graph.aget_state({"configurable": {"thread_id": "s"}})).values
    assert [m.id for m in state["messages"]] == [
        "t1:user", "t1:assistant", "t2:user", "t2:assistant", "t3:user", "t3:assistant"
    ]  # fmt: skip
    assert [t["policy"] for t in state["emotional_history"]] == ["empathize", "empathize", "de_escalate"]
    # the LLM saw the earlier exchanges
    assert [m.content for m in llm.calls[-1][1:3]] == ["I feel low.", "I hear you. Tell me more."]


async def test_empty_turn_is_not_answered() -> None:
    graph = build_graph(MemorySaver())
    llm = ScriptedChatModel()
    deltas, updates = await run_turn(graph, DialogueContext(llm=llm), "s", "t1", "  ", None)
    assert deltas == [] and [next(iter(u)) for u in updates] == ["remember"] and llm.calls == []


@pytest.mark.slow
async def test_graph_with_the_bundled_llm() -> None:
    from agent.config import DialogueSettings
    from dialogue.llm import build_chat_model

    llm = build_chat_model(DialogueSettings(max_new_tokens=24))
    graph = builder.compile(checkpointer=MemorySaver())
    context = DialogueContext(llm=llm, max_new_tokens=24)
    deltas, updates = await run_turn(
        graph, context, "s", "t1", "I lost my keys and I'm late.", summary("fear", -0.4, 0.3)
    )
    reply = updates[-1]["respond"]["messages"][0].content
    assert len(deltas) > 2 and reply.strip()
    assert "<|" not in reply and not reply.lower().startswith("assistant")


async def test_a_turn_cancelled_mid_reply_does_not_leak_into_the_next() -> None:
    import asyncio

    graph = build_graph(MemorySaver())
    llm = ScriptedChatModel(reply="One two three four five six seven.", delay_s=0.05)
    context = DialogueContext(llm=llm)
    task = asyncio.create_task(run_turn(graph, context, "s", "t1", "Tell me a story.", None))
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    llm.delay_s = 0.0
    _, updates = await run_turn(graph, context, "s", "t2", "Hello?", None)
    assert [next(iter(u)) for u in updates] == ["remember", "choose_policy", "respond"]
    state = (await graph.aget_state({"configurable": {"thread_id": "s"}})).values
    assert [m.id for m in state["messages"]] == ["t1:user", "t2:user", "t2:assistant"]
    assert len(llm.calls) == 2
