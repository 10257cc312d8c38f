"""Tests that need Redis or a browser skip locally but fail under CI, so a pipeline cannot skip them."""

from __future__ import annotations

import pytest

from tests.voice.voice_fakes import skip_or_fail


@pytest.mark.parametrize("ci", ["true", "True"])
def test_missing_environment_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="no Redis.*CI=true"):
        skip_or_fail("no Redis")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_missing_environment_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="no Redis"):
        skip_or_fail("no Redis")
