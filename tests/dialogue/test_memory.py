"""Long histories fold into a running summary; Redis keys carry the session TTL; barge-in keeps what was
heard."""

from __future__ import annotations

import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import MemorySaver

from agent.config import DialogueSettings, Settings
from dialogue import memory, nodes
from dialogue.context import DialogueContext
from dialogue.engine import DialogueEngine
from dialogue.events import TextDelta
from dialogue.graph import builder
from dialogue.state import EmotionTurn

from .conftest import ScriptedChatModel, perception, summary


def test_fold_is_extractive_emotional_and_bounded() -> None:
    turns = [
        EmotionTurn(turn_id=f"t{i}", label=label, valence=v, arousal=0.0)
        for i, (label, v) in enumerate([("sad", -0.7), ("sad", -0.6), ("neutral", 0.0), ("happy", 0.5)])
    ]
    messages = [HumanMessage(f"Topic number {i}. And more words.", id=f"t{i}:user") for i in range(4)]
    assert memory.fold(turns, messages, summary_turns=0, keep=4) is None
    text, covered = memory.fold(turns, messages, summary_turns=0, keep=1)
    assert covered == 3
    assert text.startswith("Earlier in this conversation (3 turns): the user sounded sad, then calm")
    assert "mood improving" in text and '"Topic number 0"' in text and "Topic number 3" not in text
    assert memory.fold(turns, messages, summary_turns=3, keep=1) is None
    many = [EmotionTurn(turn_id=f"m{i}", label="neutral", valence=0.0, arousal=0.0) for i in range(500)]
    words = [HumanMessage(" ".join(["word"] * 50), id=f"m{i}:user") for i in range(500)]
    started = time.perf_counter()
    long_text, _ = memory.fold(many, words, summary_turns=0, keep=6)
    assert time.perf_counter() - started < 0.05 and len(long_text) < 600


async def test_old_turns_reach_the_llm_only_through_the_summary() -> None:
    graph = builder.compile(checkpointer=MemorySaver())
    llm = ScriptedChatModel(reply="I see.")
    context = DialogueContext(llm=llm, history_turns=2)
    config = {"configurable": {"thread_id": "s"}}
    said = ["My dog is ill.", "The vet was expensive.", "I slept badly.", "Work was long.", "Now I'm home."]
    for i, text in enumerate(said):
        await graph.ainvoke(
            {"turn_id": f"t{i}", "user_text": text, "perception": summary("sad", -0.5, -0.2)},
            config,
            context=context,
        )
    state = (await graph.aget_state(config)).values
    assert state["summary_turns"] == 2 and '"My dog is ill"' in state["summary"]
    assert len(state["messages"]) == 10  # everything stays stored
    system, *window = llm.calls[-1]
    assert "My dog" not in system.content  # the summary quotes the user: never in the system prompt
    assert [m.content.split("\n\n")[-1] for m in window] == [
        "I slept badly.", "I see.", "Work was long.", "I see.", "Now I'm home."
    ]  # fmt: skip
    assert isinstance(window[0], HumanMessage) and window[0].content.startswith("(Earlier in this")


def test_window_follows_turns_when_a_reply_was_removed() -> None:
    messages = [HumanMessage("u0", id="t0:user"), AIMessage("a0", id="t0:assistant")]
    messages += [HumanMessage("u1", id="t1:user")]  # t1 interrupted before anything was heard
    messages += [HumanMessage("u2", id="t2:user")]
    window = nodes.conversation_window(messages, history_turns=1, summary="S")
    assert [m.content for m in window] == ["(S)\n\nu1", "u2"]


@pytest.mark.integration
async def test_every_session_key_gets_the_ttl(redis_client, key_prefix) -> None:
    settings = Settings(dialogue=DialogueSettings(session_ttl_s=120))
    llm = ScriptedChatModel()
    engine = await DialogueEngine.create(settings, redis_client, llm=llm, key_prefix=key_prefix)
    for i in range(2):
        async for _ in engine.reply("ttl", f"t{i}", "Hello there.", perception("neutral", 0.0, 0.0)):
            pass
    await engine.mark_interrupted("ttl", "t1", "Hello")
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}:*")]
    session_keys = [k for k in keys if ":ttl:" in k]
    assert {k.split(":")[1] for k in session_keys} >= {"cp", "blob", "idx"}
    ttls = {k: await redis_client.ttl(k) for k in session_keys}
    assert all(0 < ttl <= 120 for ttl in ttls.values()), ttls
    # the only keys without a TTL are the namespace's two shared ones (not per session, a few bytes)
    assert sorted(set(keys) - set(session_keys)) == [f"{key_prefix}:seq", f"{key_prefix}:threads"]
    await engine.aclose()


@pytest.mark.integration
async def test_barge_in_history_keeps_only_what_was_heard(redis_client, key_prefix) -> None:
    llm = ScriptedChatModel(reply="First sentence here. Second sentence never heard.", delay_s=0.02)
    engine = await DialogueEngine.create(Settings(), redis_client, llm=llm, key_prefix=key_prefix)
    stream = engine.reply("b", "t1", "Tell me.", None)
    heard = ""
    async for event in stream:
        if isinstance(event, TextDelta):
            heard += event.text
            if heard.endswith("here."):
                break
    await stream.aclose()
    await engine.mark_interrupted("b", "t1", heard)
    async for _ in engine.reply("b", "t2", "Go on.", None):
        pass
    assert [m.content for m in llm.calls[-1][1:]] == ["Tell me.", "First sentence here.", "Go on."]
    turns = await engine.history("b")
    assert turns[0]["assistant_text"] == "First sentence here." and turns[0]["interrupted"]
    await engine.aclose()
