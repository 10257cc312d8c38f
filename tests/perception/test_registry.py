"""Backends are chosen by name; unknown names fail with the list of known ones."""

from __future__ import annotations

import pytest

from agent.config import PerceptionSettings
from perception.base import Perceiver, PerceptionError
from perception.registry import build_perceiver, known_perceivers, register_perceiver, unregister_perceiver


def test_classical_is_registered_by_default() -> None:
    assert "classical" in known_perceivers()


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(PerceptionError, match="known: .*classical"):
        build_perceiver(PerceptionSettings(estimator="nope"))


@pytest.fixture
def fake_backend():
    """A backend registered as "fake-test" for one test, and removed after it."""
    built: list[PerceptionSettings] = []

    def factory(settings: PerceptionSettings) -> Perceiver:
        built.append(settings)
        return object()  # type: ignore[return-value]

    register_perceiver("fake-test", factory)
    yield factory, built
    unregister_perceiver("fake-test")


def test_register_and_build_by_config(monkeypatch: pytest.MonkeyPatch, fake_backend) -> None:
    factory, built = fake_backend
    with pytest.raises(ValueError):
        register_perceiver("fake-test", lambda s: factory(s))
    monkeypatch.setenv("EMO_PERCEPTION__ESTIMATOR", "fake-test")
    from agent.config import Settings

    build_perceiver(Settings().perception)
    assert built and built[0].estimator == "fake-test"


def test_unregistered_backends_are_gone(fake_backend) -> None:
    factory, _ = fake_backend
    assert "fake-test" in known_perceivers()
    assert unregister_perceiver("fake-test") is factory
    assert "fake-test" not in known_perceivers()
    assert unregister_perceiver("fake-test") is None
    with pytest.raises(PerceptionError, match="unknown perception estimator"):
        build_perceiver(PerceptionSettings(estimator="fake-test"))
