"""The dialogue graph: remember the turn → choose a policy → respond.

::

    START → remember ─(route_turn)─▶ choose_policy → respond → END
                      └─ empty turn ─▶ END

``builder`` is exported uncompiled so callers (and tests) compile it with their own checkpointer; the
product compiles it with the Redis checkpointer in :class:`dialogue.engine.DialogueEngine`. The graph is
built by :func:`make_builder` so variants (extra nodes, other routing) can start from the same function.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from dialogue import nodes
from dialogue.context import DialogueContext
from dialogue.state import InputState, State


def make_builder() -> StateGraph[State, DialogueContext, InputState, Any]:
    """A fresh, uncompiled dialogue graph."""
    graph = StateGraph(State, context_schema=DialogueContext, input_schema=InputState)
    graph.add_node("remember", nodes.remember)
    graph.add_node("choose_policy", nodes.choose_policy)
    graph.add_node("respond", nodes.respond)
    graph.add_edge(START, "remember")
    graph.add_conditional_edges("remember", nodes.route_turn)
    graph.add_edge("choose_policy", "respond")
    graph.add_edge("respond", "__end__")
    return graph


builder = make_builder()


def build_graph(checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """Compile :data:`builder` with ``checkpointer`` (``None``: no memory between runs)."""
    return builder.compile(checkpointer=checkpointer, name="emo-dialogue")
