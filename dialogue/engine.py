"""The dialogue engine the voice layer talks to: one compiled graph, its LLM and its Redis memory.

Each session is a LangGraph thread (``thread_id = session_id``) checkpointed in Redis with
``langgraph-checkpoint-plainredis``, so a session survives restarts and resumes with its history. The
checkpoints are written behind, from memory (:mod:`dialogue.checkpoint`): replies never wait on Redis and
go on while it is down; :meth:`DialogueEngine.aclose` waits for the queued writes. A reply
is an async stream of :mod:`dialogue.events`: one :class:`PolicyChosen`, :class:`TextDelta` pieces as
tokens arrive, one :class:`ReplyDone`.

Cancellation: closing or cancelling a :meth:`DialogueEngine.reply` stream (barge-in) stops the LLM within
one token and releases everything it held; the turn's user message stays recorded. Call
:meth:`DialogueEngine.mark_interrupted` afterwards so the stored reply is what the user actually heard.
Turns of one session are serialized; different sessions run concurrently.

Forgetting: :meth:`DialogueEngine.forget_turn` undoes a session's latest turn altogether (the voice loop
answers speculatively at a pause and drops the turn when the user goes on speaking). It forks the session's
thread back to the checkpoint from before that turn (LangGraph's ``__copy__`` update), so every field any
node wrote, extensions' too, is as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, RemoveMessage
from langgraph_checkpoint_plainredis import AsyncRedisSaver

from dialogue.checkpoint import WriteBehindSaver
from dialogue.context import DialogueContext
from dialogue.events import PolicyChosen, ReplyDone, ReplyEvent, TextDelta
from dialogue.extensions import Registry, load_extensions
from dialogue.graph import build_graph
from dialogue.llm import build_chat_model, dialogue_section, preload
from dialogue.nodes import assistant_message_id, reply_limits
from dialogue.policies import DEFAULT_POLICY, get_policy
from dialogue.state import summarize_perception
from dialogue.text import ReplyShaper

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from langgraph.graph.state import CompiledStateGraph

    from dialogue.config import DialogueSettings
    from perception.types import Perception

log = logging.getLogger(__name__)

# Redis key namespace of the dialogue checkpoints (``{prefix}:cp:{session_id}:...``).
KEY_PREFIX = "emo:dialogue"
# How many sessions' latest turn can be forgotten (:meth:`DialogueEngine.forget_turn`).
FORGETTABLE_SESSIONS = 10_000


class DialogueEngine:
    """Replies to user turns, remembering each session in Redis. Build with :meth:`create`."""

    def __init__(self, graph: CompiledStateGraph, context: DialogueContext) -> None:
        self.graph = graph
        self.context = context
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._closed = False
        # session id -> (its latest turn's id, the checkpoint config from before that turn; None: no history),
        # for the most recently active sessions only
        self._before_turn: OrderedDict[str, tuple[str, dict[str, Any] | None]] = OrderedDict()

    @classmethod
    async def create(
        cls,
        settings: DialogueSettings | Any,
        redis_client: aioredis.Redis,
        *,
        llm: BaseChatModel | None = None,
        key_prefix: str = KEY_PREFIX,
        registry: Registry | None = None,
    ) -> DialogueEngine:
        """Build the LLM (loading and warming up the local model in a worker thread) and compile the graph
        with a Redis checkpointer on ``redis_client`` (which stays owned by the caller).

        ``settings`` is the dialogue section (:class:`dialogue.config.DialogueSettings`), or a config tree
        holding it as ``.dialogue`` with its ``.cache_dir``.

        Extensions: ``registry`` when given, else those named by ``settings.extensions`` and, when
        ``settings.extension_entry_points``, installed entry points (:mod:`dialogue.extensions`).

        Session keys expire ``settings.session_ttl_s`` seconds after their last write (0: never).
        """
        dialogue, cache_dir = dialogue_section(settings)
        if registry is None:
            registry = load_extensions(dialogue.extensions, use_entry_points=dialogue.extension_entry_points)
        llm = llm or build_chat_model(dialogue, cache_dir)
        await asyncio.to_thread(preload, llm)
        ttl = dialogue.session_ttl_s or None
        saver = WriteBehindSaver(
            AsyncRedisSaver(client=redis_client, ttl=ttl, prefix=key_prefix),
            max_threads=dialogue.memory_sessions,
            max_pending=dialogue.write_queue,
        )
        context = DialogueContext(
            llm=llm,
            max_new_tokens=dialogue.max_new_tokens,
            history_turns=dialogue.history_turns,
            rules=tuple(registry.rules),
        )
        return cls(build_graph(saver, registry), context)

    # ---------------------------------------------------------------------------------------- helpers

    @staticmethod
    def _config(session_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": session_id}}

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the dialogue engine is closed")

    async def _values(self, session_id: str) -> dict[str, Any]:
        snapshot = await self.graph.aget_state(self._config(session_id))
        return dict(snapshot.values or {})

    # ------------------------------------------------------------------------------------ public API

    async def start_session(self, session_id: str) -> bool:
        """Open a session; True when it already has history in Redis (it resumes)."""
        self._check_open()
        return bool((await self._values(session_id)).get("messages"))

    async def reply(
        self, session_id: str, turn_id: str, user_text: str, perception: Perception | None
    ) -> AsyncIterator[ReplyEvent]:
        """Answer one user turn as a stream of events (see the module docstring for cancellation).

        ``user_text`` only ever becomes a user message: it cannot change the policy or the system prompt.
        ``timings_ms`` in :class:`ReplyDone`: ``policy`` (turn start → policy known), ``llm_first_token``
        (policy known → first text), ``llm_total`` (policy known → reply complete), ``total``.
        """
        self._check_open()
        started = time.perf_counter()
        inputs = {
            "turn_id": turn_id,
            "user_text": user_text,
            "perception": summarize_perception(perception),
        }
        timings: dict[str, float] = {}
        policy_name = ""
        llm_started = started
        shaper: ReplyShaper | None = None
        final_text: str | None = None

        async with self._lock(session_id):
            before = await self.graph.aget_state(self._config(session_id))
            self._before_turn[session_id] = (turn_id, before.config if before.values else None)
            self._before_turn.move_to_end(session_id)
            while len(self._before_turn) > FORGETTABLE_SESSIONS:
                self._before_turn.popitem(last=False)
            stream = self.graph.astream(
                inputs,
                self._config(session_id),
                context=self.context,
                stream_mode=["messages", "updates", "custom"],
            )
            async with contextlib.aclosing(stream):
                async for mode, payload in stream:
                    if mode == "custom":  # the replying node announces the final policy (hooks may change it)
                        if isinstance(payload, dict) and payload.get("event") == "policy" and shaper is None:
                            policy_name = str(payload["policy"])
                            policy = get_policy(policy_name)
                            llm_started = time.perf_counter()
                            timings["policy"] = (llm_started - started) * 1000
                            shaper = ReplyShaper(reply_limits(policy_name, self.context)[0])
                            yield PolicyChosen(policy_name, policy.prosody, policy.follow_up)
                        continue
                    if mode == "updates":
                        for node, update in (payload or {}).items():
                            if node in ("respond", "safety_reply") and update:
                                final_text = str(update["messages"][-1].content)
                        continue
                    chunk, metadata = payload
                    if (
                        shaper is None
                        or metadata.get("langgraph_node") != "respond"
                        or not isinstance(chunk, AIMessageChunk)
                    ):
                        continue
                    piece = shaper.feed(str(chunk.content))
                    if piece:
                        timings.setdefault("llm_first_token", (time.perf_counter() - llm_started) * 1000)
                        yield TextDelta(piece)

        if not policy_name:  # an empty turn: remembered, not answered
            policy_name = DEFAULT_POLICY
            yield PolicyChosen(policy_name, get_policy(policy_name).prosody, False)
        streamed = shaper.text if shaper else ""
        text = final_text if final_text is not None else streamed
        if text != streamed:
            if text.startswith(streamed):
                timings.setdefault("llm_first_token", (time.perf_counter() - llm_started) * 1000)
                yield TextDelta(text[len(streamed) :])
            else:  # the node's cleaning disagreed with the stream's; what was said stands
                log.warning("streamed reply differs from the stored one for turn %s", turn_id)
                text = streamed
        now = time.perf_counter()
        timings["llm_total"] = (now - llm_started) * 1000
        timings["total"] = (now - started) * 1000
        timings.setdefault("llm_first_token", timings["llm_total"])
        yield ReplyDone(text, policy_name, timings)

    async def history(self, session_id: str) -> list[dict[str, Any]]:
        """The session's turns in order: ``turn_id``, ``user_text``, ``assistant_text``, ``label``,
        ``valence``, ``arousal``, ``policy``, ``interrupted``."""
        self._check_open()
        values = await self._values(session_id)
        messages = {m.id: m for m in values.get("messages", [])}
        turns: list[dict[str, Any]] = []
        for entry in values.get("emotional_history", []):
            turn_id = entry["turn_id"]
            user = messages.get(f"{turn_id}:user")
            assistant = messages.get(assistant_message_id(turn_id))
            turns.append(
                {
                    "turn_id": turn_id,
                    "user_text": str(user.content) if isinstance(user, HumanMessage) else "",
                    "assistant_text": str(assistant.content) if isinstance(assistant, AIMessage) else "",
                    "label": entry.get("label"),
                    "valence": entry.get("valence"),
                    "arousal": entry.get("arousal"),
                    "policy": entry.get("policy", ""),
                    "interrupted": bool(entry.get("interrupted", False)),
                }
            )
        return turns

    async def mark_interrupted(self, session_id: str, turn_id: str, heard_text: str) -> None:
        """After a barge-in, keep only what the user heard as the stored reply of ``turn_id``
        (an empty ``heard_text`` removes the reply). Unknown turns are ignored."""
        self._check_open()
        async with self._lock(session_id):
            values = await self._values(session_id)
            if not any(t["turn_id"] == turn_id for t in values.get("emotional_history", [])):
                return
            message_id = assistant_message_id(turn_id)
            present = any(m.id == message_id for m in values.get("messages", []))
            update: dict[str, Any] = {"emotional_history": [{"turn_id": turn_id, "interrupted": True}]}
            heard = heard_text.strip()
            if heard:
                policy = next(
                    (t.get("policy", "") for t in values["emotional_history"] if t["turn_id"] == turn_id), ""
                )
                update["messages"] = [
                    AIMessage(
                        content=heard,
                        id=message_id,
                        additional_kwargs={"policy": policy, "turn_id": turn_id, "interrupted": True},
                    )
                ]
            elif present:
                update["messages"] = [RemoveMessage(id=message_id)]
            await self.graph.aupdate_state(self._config(session_id), update, as_node="respond")

    async def forget_turn(self, session_id: str, turn_id: str) -> bool:
        """Undo ``turn_id`` altogether if it is the session's latest turn: the history is as before it
        (the thread is forked back to the checkpoint from before it, or emptied if the turn was the first).
        Returns whether anything was undone; any other turn is left alone."""
        self._check_open()
        async with self._lock(session_id):
            latest = self._before_turn.get(session_id)
            if latest is None or latest[0] != turn_id:
                return False
            del self._before_turn[session_id]
            _, before = latest
            if before is None:
                await self.graph.checkpointer.adelete_thread(session_id)
            else:
                await self.graph.aupdate_state(before, None, as_node="__copy__")
            log.info("session %s: turn %s forgotten", session_id, turn_id)
            return True

    @property
    def storage_degraded(self) -> bool:
        """True while history writes wait in memory for Redis."""
        saver = self.graph.checkpointer
        return bool(getattr(saver, "degraded", False))

    def end_session(self, session_id: str) -> None:
        """A session closed: its history may leave memory once it is in Redis (it resumes from there)."""
        saver = self.graph.checkpointer
        if isinstance(saver, WriteBehindSaver):
            saver.release(session_id)

    async def aclose(self, flush_timeout_s: float = 10.0) -> None:
        """Stop accepting calls and wait (at most ``flush_timeout_s``) for the history writes queued for
        Redis. The Redis client belongs to the caller and stays open."""
        self._closed = True
        saver = self.graph.checkpointer
        if isinstance(saver, WriteBehindSaver):
            await saver.flush(flush_timeout_s)
            await saver.aclose()
