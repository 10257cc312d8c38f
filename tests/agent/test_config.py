"""The config tree reads EMO_ variables, nested with ``__``."""

from __future__ import annotations

import pytest

from agent.config import Settings


def test_defaults_are_the_embedded_offline_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("EMO_"):
            monkeypatch.delenv(key)
    s = Settings(_env_file=None)
    assert s.port == 8765 and s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.perception.asr_model == "tiny.en"
    assert s.dialogue.llm_backend == "reply"


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMO_PORT", "9000")
    monkeypatch.setenv("EMO_VOICE__MIN_SILENCE_MS", "700")
    monkeypatch.setenv("EMO_DIALOGUE__LLM_BACKEND", "openai")
    s = Settings(_env_file=None)
    assert s.port == 9000
    assert s.voice.min_silence_ms == 700
    assert s.dialogue.llm_backend == "openai"


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMO_DIALOGUE__LLM_BACKEND", "telepathy")
    with pytest.raises(ValueError):
        Settings(_env_file=None)


def test_trajectory_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("EMO_"):
            monkeypatch.delenv(key)
    s = Settings(_env_file=None)
    assert (s.trajectory.consent_default, s.trajectory.keep_audio) == (True, False)
    assert s.trajectory.ttl_s > 0
    monkeypatch.setenv("EMO_TRAJECTORY__CONSENT_DEFAULT", "false")
    monkeypatch.setenv("EMO_TRAJECTORY__TTL_S", "3600")
    monkeypatch.setenv("EMO_TRAJECTORY__KEEP_AUDIO", "true")
    s = Settings(_env_file=None)
    assert (s.trajectory.consent_default, s.trajectory.ttl_s, s.trajectory.keep_audio) == (False, 3600, True)


def test_perception_runs_in_process_unless_the_queue_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("EMO_"):
            monkeypatch.delenv(key)
    s = Settings(_env_file=None)
    assert (s.perception.mode, s.perception.device) == ("in-process", "cpu")
    assert (
        s.perception_queue.redis_url == ""
        and s.perception_queue.job_timeout_s > s.perception_queue.reclaim_idle_s
    )
    monkeypatch.setenv("EMO_PERCEPTION__MODE", "redis-streams")
    monkeypatch.setenv("EMO_PERCEPTION__DEVICE", "cuda:1")
    monkeypatch.setenv("EMO_PERCEPTION_QUEUE__STREAM", "jobs")
    monkeypatch.setenv("EMO_PERCEPTION_QUEUE__RECLAIM_IDLE_S", "2.5")
    s = Settings(_env_file=None)
    assert (s.perception.mode, s.perception.device) == ("redis-streams", "cuda:1")
    assert (s.perception_queue.stream, s.perception_queue.reclaim_idle_s) == ("jobs", 2.5)
    monkeypatch.setenv("EMO_PERCEPTION__MODE", "carrier-pigeon")
    with pytest.raises(ValueError):
        Settings(_env_file=None)
