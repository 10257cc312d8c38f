"""The dialogue graph: remember the turn → choose a policy → respond (or the fixed safety reply).

::

    START → remember ─(route_turn)─▶ [after_remember nodes] → choose_policy ─(route_policy)─┐
                      └─ empty turn ─▶ END                                                   │
             ┌─ safety ─▶ safety_reply → END ◀───────────────────────────────────────────────┤
             └─ other ──▶ [before_respond nodes] → respond → END ◀───────────────────────────┘

The bracketed hook points hold nodes added by extensions (:mod:`dialogue.extensions`), in registration
order; without extensions they are empty. ``builder`` (no extensions) is exported uncompiled so callers
(and tests) compile it with their own checkpointer; :func:`make_builder` builds one with a registry. The
product compiles it with the Redis checkpointer in :class:`dialogue.engine.DialogueEngine`.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from dialogue import nodes
from dialogue.context import DialogueContext
from dialogue.extensions import Registry
from dialogue.state import InputState, State


def _chain(graph: StateGraph, names: list[str], last: str) -> str:
    """Link ``names`` in order ending at ``last``; return the first node of the chain."""
    for current, following in zip(names, [*names[1:], last], strict=False):
        graph.add_edge(current, following)
    return names[0] if names else last


def make_builder(registry: Registry | None = None) -> StateGraph[State, DialogueContext, InputState, Any]:
    """A fresh, uncompiled dialogue graph with ``registry``'s nodes at their hook points."""
    registry = registry or Registry()
    graph = StateGraph(State, context_schema=DialogueContext, input_schema=InputState)
    graph.add_node("remember", nodes.remember)
    graph.add_node("choose_policy", nodes.choose_policy)
    graph.add_node("safety_reply", nodes.safety_reply)
    graph.add_node("respond", nodes.respond)
    for hook_nodes in registry.nodes.values():
        for name, node in hook_nodes:
            graph.add_node(name, node)
    after_remember = _chain(graph, [n for n, _ in registry.nodes["after_remember"]], "choose_policy")
    before_respond = _chain(graph, [n for n, _ in registry.nodes["before_respond"]], "respond")
    graph.add_edge(START, "remember")
    graph.add_conditional_edges("remember", nodes.route_turn, {"choose_policy": after_remember, END: END})
    graph.add_conditional_edges(
        "choose_policy", nodes.route_policy, {"safety_reply": "safety_reply", "next": before_respond}
    )
    graph.add_edge("safety_reply", END)
    graph.add_edge("respond", END)
    return graph


builder = make_builder()


def build_graph(
    checkpointer: BaseCheckpointSaver | None = None, registry: Registry | None = None
) -> CompiledStateGraph:
    """Compile a graph (with ``registry``'s nodes, if any) and ``checkpointer`` (``None``: no memory)."""
    graph = builder if registry is None else make_builder(registry)
    return graph.compile(checkpointer=checkpointer, name="emo-dialogue")
