"""The :class:`Perceiver` interface every perception backend implements.

A perceiver turns one user turn (mono float32 audio at 16 kHz) into a :class:`Perception`, and a typed
turn into one from its words alone (:meth:`Perceiver.perceive_text`, shared by every backend). A
:class:`SpeakerBaseline` belongs to one conversation: acoustic cues are judged against the speaker's own
running baseline, so a naturally loud speaker is not heard as angry; it also keeps the words of the
conversation's last few user turns (:meth:`SpeakerBaseline.recent_texts`), which the text model reads a
turn with ("Yeah, it was awful." after "My dog died last week."). Backends are chosen by
``EMO_PERCEPTION__ESTIMATOR`` through :func:`perception.registry.build_perceiver`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from perception.types import Perception

SAMPLE_RATE = 16_000
#: How many earlier user turns a baseline keeps for the text model to read a turn with.
CONTEXT_TURNS = 3


class PerceptionError(Exception):
    """Base class for perception failures a user can act on (bad audio, missing model files)."""


class AudioError(PerceptionError):
    """The input is not usable audio: unreadable, empty, too short, wrong shape."""


class SpeakerBaseline(ABC):
    """Running statistics of one speaker's acoustic cues within a conversation.

    :meth:`to_state` and :meth:`load_state` carry a baseline between processes running the same model
    (a perception worker continues the conversation another one began, :mod:`perception.streams`): the
    state is plain JSON, never pickled code. Baselines that cannot travel keep the defaults, which raise.
    """

    @abstractmethod
    def reset(self) -> None: ...

    def recent_texts(self) -> list[str]:
        """The words of this conversation's last :data:`CONTEXT_TURNS` user turns, oldest first."""
        return list(self.__dict__.get("_recent_texts", ()))

    def remember_text(self, text: str) -> None:
        """Keep ``text`` (a user turn's words) as context for the turns that follow it."""
        text = " ".join(text.split())
        if text:
            self.__dict__["_recent_texts"] = [*self.recent_texts(), text][-CONTEXT_TURNS:]

    def forget_texts(self) -> None:
        self.__dict__.pop("_recent_texts", None)

    def to_state(self) -> dict[str, Any]:
        """This baseline's statistics as JSON-ready data (no model parts: those are the perceiver's)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be sent to another process")

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace this baseline's statistics with ``state`` (from :meth:`to_state` of the same kind)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restored from a state")


class Perceiver(ABC):
    """Speech in, :class:`Perception` out. Implementations must be safe to call from a worker thread."""

    #: Identifier written into every Perception (``name@version``).
    model_id: str
    #: The text-emotion model (:class:`perception.text_emotion.TextEmotionModel`) that reads the words of
    #: typed turns and, fused with the voice at ``text_weight`` (:mod:`perception.fusion`), of spoken ones;
    #: ``None``: the emotion lexicon for typed turns, the voice alone for spoken ones.
    text_model: Any = None
    text_weight: float = 0.0

    @abstractmethod
    def new_baseline(self) -> SpeakerBaseline:
        """A fresh per-conversation speaker baseline."""

    @abstractmethod
    def perceive(
        self,
        audio: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        baseline: SpeakerBaseline | None = None,
    ) -> Perception:
        """Perceive one turn. ``audio`` is mono float32 in [-1, 1]. When ``baseline`` is given the
        turn's cues are compared with it and then folded into it. Raises :class:`AudioError` for unusable
        audio."""

    def warmup(self) -> None:
        """One pass over a second of quiet noise, so the first user turn does not pay for lazy init."""
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.01
        self.perceive(noise)

    def perceive_with_cues(
        self,
        audio: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        baseline: SpeakerBaseline | None = None,
    ) -> tuple[Perception, dict[str, float]]:
        """:meth:`perceive` plus the measured cue z-scores its acoustic evidence refers to, so the
        evidence can be checked (:func:`perception.grounding.verify`). Backends that measure no cues
        return an empty dict."""
        return self.perceive(audio, sample_rate, baseline), {}

    def perceive_text(self, text: str, baseline: SpeakerBaseline | None = None) -> Perception:
        """Perception of a typed turn: the text model's reading of the words (the emotion lexicon without
        one), no acoustic claims (:func:`perception.typed_turn.perceive_typed`, under this perceiver's
        ``model_id``). With the conversation's ``baseline`` the words are read after its earlier turns'
        and then kept in it. Every perceiver answers typed turns this way unless it reads text its own
        way."""
        from perception.typed_turn import perceive_typed  # lazily: it imports modules that import this one

        context = baseline.recent_texts() if baseline is not None else []
        perception = perceive_typed(text, self.model_id, self.text_model, context)
        if baseline is not None:
            baseline.remember_text(text)
        return perception
