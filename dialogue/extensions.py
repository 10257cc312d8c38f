"""Extending the dialogue without editing this package: policies with selection rules, and graph nodes at
hook points.

An extension is a function ``register(registry: Registry) -> None``. It is found by

* configuration: ``EMO_DIALOGUE__EXTENSIONS='["examples.checkin:register"]'`` (``module:function``), or
* a Python entry point in the group :data:`ENTRY_POINT_GROUP` of an installed package::

      [project.entry-points."emo_agent.dialogue"]
      checkin = "my_package.checkin:register"

:meth:`dialogue.engine.DialogueEngine.create` loads both (see :func:`load_extensions`) and compiles the
graph with the registry's nodes; its rules go to the ``choose_policy`` node through
:class:`dialogue.context.DialogueContext`. Hook points (see :data:`HOOKS`):

* ``after_remember``: after the turn is recorded (and history folded), before the policy is chosen; runs
  on every answered turn, safety turns included.
* ``before_respond``: after the policy is chosen, before the LLM writes; may change ``policy``. Skipped on
  safety turns, so no extension can replace the safety reply.

Nodes are ordinary LangGraph nodes (``async def node(state: State, runtime: Runtime[DialogueContext])``
returning a partial update); nodes on one hook run in registration order. Tools are added the same way: a
node that calls the tool and writes its result into the state.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, get_args

from dialogue.policies import BUILTIN_PRIORITY, POLICIES, Policy, Rule, RuleTest, register_policy
from dialogue.safety import SAFETY_POLICY

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "emo_agent.dialogue"


class ExtensionError(Exception):
    """A configured or installed extension cannot be imported or refuses to register."""


Hook = Literal["after_remember", "before_respond"]
HOOKS: tuple[Hook, ...] = get_args(Hook)
NodeFunction = Callable[..., Any]
BUILTIN_NODES = frozenset({"remember", "choose_policy", "respond", "safety_reply"})


@dataclass
class Registry:
    """What extensions added: graph nodes per hook point, and policy selection rules."""

    nodes: dict[Hook, list[tuple[str, NodeFunction]]] = field(default_factory=lambda: {h: [] for h in HOOKS})
    rules: list[Rule] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    """The extensions loaded into this registry, by name."""

    def add_policy(
        self, policy: Policy, when: RuleTest | None = None, priority: int = BUILTIN_PRIORITY
    ) -> None:
        """Register ``policy`` (into :data:`dialogue.policies.POLICIES`) and, with ``when``, a rule that
        selects it. ``priority`` >= :data:`~dialogue.policies.BUILTIN_PRIORITY` runs before the built-in
        rules, lower only when they answer ``neutral``. Safety is always checked first."""
        if policy.name == SAFETY_POLICY:
            raise ValueError("the safety policy is fixed and cannot be replaced")
        register_policy(policy)
        if when is not None:
            self.add_rule(Rule(policy.name, when, priority))

    def add_rule(self, rule: Rule) -> None:
        """Add a selection rule for an already registered policy."""
        if rule.policy == SAFETY_POLICY or rule.policy not in POLICIES:
            raise ValueError(f"no policy {rule.policy!r} to select (register it first; safety is fixed)")
        self.rules.append(rule)

    def add_node(self, name: str, node: NodeFunction, hook: Hook = "before_respond") -> None:
        """Insert ``node`` into the graph at ``hook`` (after the nodes already there)."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}; choose one of {HOOKS}")
        taken = BUILTIN_NODES | {n for nodes in self.nodes.values() for n, _ in nodes}
        if name in taken:
            raise ValueError(f"a node called {name!r} already exists")
        self.nodes[hook].append((name, node))


def _import(spec: str) -> Callable[[Registry], Any]:
    module_name, _, attribute = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in (attribute or "register").split("."):
        target = getattr(target, part)
    return target


def load_extensions(specs: Sequence[str] = (), *, use_entry_points: bool = True) -> Registry:
    """A registry holding the configured extensions (``"module:function"``) and, with
    ``use_entry_points``, those of installed packages (group :data:`ENTRY_POINT_GROUP`). Entry points load
    first (sorted by name), then the configured ones; an extension named twice loads once."""
    registry = Registry()
    found: list[tuple[str, Callable[[], Any]]] = []
    if use_entry_points:
        for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
            found.append((point.value, point.load))
    found += [(spec, lambda spec=spec: _import(spec)) for spec in specs]
    for name, load in found:
        if name in registry.loaded:
            continue
        try:
            register: Callable[[Registry], Any] = load()
            register(registry)
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            raise ExtensionError(f"dialogue extension {name!r} failed to load: {exc}") from exc
        registry.loaded.append(name)
        log.info("dialogue extension loaded: %s", name)
    return registry


def policy_rules(registry: Registry | None) -> Iterable[Rule]:
    return registry.rules if registry else ()
