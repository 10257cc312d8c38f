"""What the voice loop is given: typed protocols for the services its host builds once per process.

The server and every session receive one object with a perceiver, the dialogue engine, TTS (or None) and
the trajectory log (or None); the server also reads ``settings.voice``. Only the members named here are
used, so any object with them will do (the test suite passes fakes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from dialogue.events import ReplyEvent
from perception.base import Perceiver
from perception.types import Perception
from voice.config import VoiceSettings
from voice.records import TurnRecord
from voice.tts import TTS


class DialogueLike(Protocol):
    """The dialogue engine: conversations by session id, one streamed reply per turn."""

    async def start_session(self, session_id: str) -> bool:
        """Open (or resume) a conversation; True when it had history."""
        ...

    def reply(
        self, session_id: str, turn_id: str, user_text: str, perception: Perception
    ) -> AsyncIterator[ReplyEvent]:
        """Stream the reply to one turn (an awaitable that gives the stream is accepted too)."""
        ...

    async def mark_interrupted(self, session_id: str, turn_id: str, heard_text: str) -> Any:
        """Keep only ``heard_text`` of the reply to ``turn_id`` in the history."""
        ...

    async def forget_turn(self, session_id: str, turn_id: str) -> Any:
        """Undo ``turn_id``, the session's latest turn, altogether (a speculative turn dropped unheard).
        Optional: without it a dropped turn stays in the history."""
        ...


class TrajectoryLike(Protocol):
    """The trajectory log as a session writes it. The attributes ``consent_default``, ``keep_audio`` and
    ``dialogue_model`` are read when present (see :class:`voice.records.TurnRecorder`)."""

    async def append(self, record: TurnRecord) -> Any: ...

    async def store_audio(self, session_id: str, turn_id: str, wav: bytes) -> str:
        """Store one user turn's WAV bytes; returns the key written into ``audio_ref``."""
        ...


class TrajectoryReader(Protocol):
    """The trajectory log as ``GET /sessions/{id}/trajectory`` reads it."""

    async def read(self, session_id: str) -> Sequence[TurnRecord]:
        """Every record of ``session_id``, in time order (empty when nothing was logged)."""
        ...


class ServicesLike(Protocol):
    """The services one session uses."""

    @property
    def perceiver(self) -> Perceiver: ...

    @property
    def dialogue(self) -> DialogueLike: ...

    @property
    def tts(self) -> TTS | None: ...

    @property
    def trajectory(self) -> TrajectoryLike | None: ...


class HasVoiceSettings(Protocol):
    @property
    def voice(self) -> VoiceSettings: ...


class ServerServices(ServicesLike, Protocol):
    """The services the server is given: a session's, plus the settings holding the voice section. A
    ``trajectory`` that is also a :class:`TrajectoryReader` serves ``/sessions/{id}/trajectory``."""

    @property
    def settings(self) -> HasVoiceSettings: ...
