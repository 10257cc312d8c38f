"""Name → factory registry of perception backends, chosen by ``PerceptionSettings.estimator``
(``EMO_PERCEPTION__ESTIMATOR`` in the agent's config tree).

    from perception.registry import build_perceiver, register_perceiver
    register_perceiver("audiollm", lambda settings: AudioLLMPerceiver(settings))
    perceiver = build_perceiver(PerceptionSettings(estimator="audiollm"))

"classical" (:class:`perception.pipeline.ClassicalPerceiver`) and "audiollm"
(:class:`perception.audiollm.perceiver.AudioLLMPerceiver`, a trained dual-encoder run at
``EMO_PERCEPTION__ESTIMATOR_PATH``) are registered by default. Factories are
imported lazily, so registering costs nothing until a backend is built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from perception.base import Perceiver, PerceptionError
from perception.config import PerceptionSettings

PerceiverFactory = Callable[[PerceptionSettings], Perceiver]

_REGISTRY: dict[str, PerceiverFactory] = {}
_LOCK = threading.Lock()


def register_perceiver(name: str, factory: PerceiverFactory, *, replace: bool = False) -> None:
    """Make ``factory`` buildable as ``name``. Registering a taken name needs ``replace=True``."""
    key = name.strip().lower()
    if not key:
        raise ValueError("perceiver name must not be empty")
    with _LOCK:
        if key in _REGISTRY and not replace and _REGISTRY[key] is not factory:
            raise ValueError(f"perceiver '{key}' is already registered")
        _REGISTRY[key] = factory


def unregister_perceiver(name: str) -> PerceiverFactory | None:
    """Remove ``name`` from the registry (e.g. a plugin unloading, a test cleaning up); returns its factory,
    or ``None`` when it was not registered."""
    with _LOCK:
        return _REGISTRY.pop(name.strip().lower(), None)


def known_perceivers() -> list[str]:
    with _LOCK:
        return sorted(_REGISTRY)


def build_perceiver(settings: PerceptionSettings | None = None) -> Perceiver:
    """The perceiver named by ``settings.estimator`` (default: :class:`PerceptionSettings`' defaults; the
    agent passes the ``EMO_PERCEPTION__*`` section); :class:`PerceptionError` for an unknown name."""
    if settings is None:
        settings = PerceptionSettings()
    key = settings.estimator.strip().lower()
    with _LOCK:
        factory = _REGISTRY.get(key)
    if factory is None:
        raise PerceptionError(
            f"unknown perception estimator '{settings.estimator}' (known: {', '.join(known_perceivers())})"
        )
    perceiver = factory(settings)
    attach_text_model(perceiver, settings)
    return perceiver


def attach_text_model(perceiver: Perceiver, settings: PerceptionSettings) -> None:
    """Give ``perceiver`` the text-emotion model ``settings.text_model`` names (none for "none")."""
    if not isinstance(perceiver, Perceiver):  # a factory's own object: it reads words its own way
        return
    name = settings.text_model.strip()
    if name.lower() in ("", "none", "off"):
        perceiver.text_model = None
        return
    from perception.text_emotion import TextEmotionModel

    perceiver.text_model = TextEmotionModel.load(None if name.lower() == "shipped" else name)
    perceiver.text_weight = settings.text_weight


def _classical(settings: PerceptionSettings) -> Perceiver:
    from perception.pipeline import ClassicalPerceiver

    return ClassicalPerceiver(settings)


register_perceiver("classical", _classical)


def _audiollm(settings: PerceptionSettings) -> Perceiver:
    from perception.audiollm.perceiver import AudioLLMPerceiver

    return AudioLLMPerceiver(settings)


register_perceiver("audiollm", _audiollm)
