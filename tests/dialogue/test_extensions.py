"""The extension API: rules with priorities, nodes at hook points, loading by config and entry points,
and the check-in example run through the real mechanism."""

from __future__ import annotations

import sys

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import MemorySaver

from dialogue.context import DialogueContext
from dialogue.events import PolicyChosen, ReplyDone
from dialogue.extensions import ENTRY_POINT_GROUP, Registry, load_extensions
from dialogue.graph import make_builder
from dialogue.policies import POLICIES, Policy, Rule, choose_policy

from .conftest import ScriptedChatModel, perception, summary


@pytest.fixture
def calm_breathing():
    policy = Policy("calm_breathing", "Guide one slow breath.", 1, 30, POLICIES["neutral"].prosody, False)
    yield policy
    POLICIES.pop(policy.name, None)


def test_rule_priorities(calm_breathing) -> None:
    POLICIES[calm_breathing.name] = calm_breathing
    scared = summary("fear", -0.5, 0.9)
    high = Rule(calm_breathing.name, lambda p, h: p is not None and p["arousal"] > 0.8, priority=150)
    low = Rule(calm_breathing.name, lambda p, h: True, priority=10)
    assert choose_policy(scared, []) == "de_escalate"
    assert choose_policy(scared, [], "", [high]) == "calm_breathing"  # before the built-ins
    assert choose_policy(scared, [], "", [low]) == "de_escalate"  # only instead of neutral
    assert choose_policy(summary("neutral", 0.0, 0.0), [], "", [low]) == "calm_breathing"


def test_registry_validates(calm_breathing) -> None:
    registry = Registry()
    with pytest.raises(ValueError):
        registry.add_rule(Rule("no-such-policy", lambda p, h: True))
    with pytest.raises(ValueError):
        registry.add_node("respond", lambda state: {})
    with pytest.raises(ValueError):
        registry.add_node("x", lambda state: {}, hook="somewhere")  # type: ignore[arg-type]
    registry.add_policy(calm_breathing, when=lambda p, h: True, priority=5)
    assert [r.policy for r in registry.rules] == ["calm_breathing"]


async def test_nodes_run_at_their_hooks_in_order() -> None:
    seen: list[str] = []

    def recorder(name: str, update: dict | None = None):
        async def node(state) -> dict:
            seen.append(f"{name}:{state.policy or '-'}")
            return update or {}

        return node

    registry = Registry()
    registry.add_node("a", recorder("a"), hook="after_remember")
    registry.add_node("b", recorder("b"), hook="before_respond")
    registry.add_node("c", recorder("c", {"policy": "encourage"}), hook="before_respond")
    graph = make_builder(registry).compile(checkpointer=MemorySaver())
    llm = ScriptedChatModel(reply="Good.")
    out = await graph.ainvoke(
        {"turn_id": "t1", "user_text": "hi", "perception": summary("sad", -0.6, -0.2)},
        {"configurable": {"thread_id": "s"}},
        context=DialogueContext(llm=llm),
    )
    assert seen == ["a:-", "b:empathize", "c:empathize"]
    assert out["policy"] == "encourage" and "warmly" in llm.calls[0][0].content.lower()


def test_configured_and_entry_point_extensions_load(tmp_path, monkeypatch) -> None:
    package = tmp_path / "emo_test_ext"
    package.mkdir()
    (package / "__init__.py").write_text(
        "def register(registry):\n    registry.add_node('from_entry_point', lambda state: {})\n"
    )
    dist = tmp_path / "emo_test_ext-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: emo-test-ext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nsample = emo_test_ext:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_extensions(["examples.checkin:register", "examples.checkin:register"])
    assert registry.loaded == ["emo_test_ext:register", "examples.checkin:register"]
    assert [n for n, _ in registry.nodes["before_respond"]] == ["from_entry_point", "check_in"]
    assert "check_in" in POLICIES
    assert load_extensions([], use_entry_points=False).loaded == []
    sys.modules.pop("emo_test_ext", None)


def test_falling_valence_rule() -> None:
    from examples.checkin import falling_valence

    assert falling_valence([0.3, 0.1, -0.15])
    assert not falling_valence([0.3, 0.1])  # too few turns
    assert not falling_valence([0.3, 0.35, -0.15])  # not falling turn after turn
    assert not falling_valence([0.1, 0.05, 0.0])  # too small a drop


async def test_checkin_example_through_the_engine() -> None:
    """The example as shipped: ``python -m examples.checkin``."""
    from examples.checkin import SCRIPT, demo

    rows = await demo()
    assert [text for text, _ in rows] == [text for text, *_ in SCRIPT]
    assert [policy for _, policy in rows] == ["encourage", "neutral", "check_in", "empathize"]


@pytest.mark.integration
async def test_checkin_loaded_from_settings_on_redis(redis_client, key_prefix, monkeypatch) -> None:
    from agent.config import Settings
    from dialogue.engine import DialogueEngine

    monkeypatch.setenv("EMO_DIALOGUE__EXTENSIONS", '["examples.checkin:register"]')
    settings = Settings()
    llm = ScriptedChatModel(reply="How are you really doing?")
    engine = await DialogueEngine.create(settings, redis_client, llm=llm, key_prefix=key_prefix)
    chosen = []
    for i, valence in enumerate([0.4, 0.1, -0.2]):
        events = [e async for e in engine.reply("s", f"t{i}", "Hm.", perception("neutral", valence, 0.0))]
        assert isinstance(events[0], PolicyChosen) and isinstance(events[-1], ReplyDone)
        assert events[0].policy == events[-1].policy
        chosen.append(events[0])
    assert chosen[-1].policy == "check_in" and chosen[-1].follow_up
    assert chosen[-1].prosody == POLICIES["check_in"].prosody
    assert "ask how they are really doing" in llm.calls[-1][0].content
    assert [t["policy"] for t in await engine.history("s")][-1] == "check_in"
    crisis = [e async for e in engine.reply("s", "t9", "I want to die.", perception("sad", -0.9, 0.0))]
    assert crisis[-1].policy == "safety"
    await engine.aclose()
    assert isinstance(AIMessage(content=""), AIMessage)


def test_a_broken_extension_is_a_clear_error() -> None:
    from dialogue.extensions import ExtensionError, load_extensions

    with pytest.raises(ExtensionError, match="no_such_module_xyz"):
        load_extensions(["no_such_module_xyz:register"], use_entry_points=False)
    with pytest.raises(ExtensionError, match="missing_function"):
        load_extensions(["examples.checkin:missing_function"], use_entry_points=False)
