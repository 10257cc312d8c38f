"""The command-line client: exit codes, one-line errors, and a file turn followed by a typed one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from voice.client import converse, main

TIMEOUT = 15


def test_a_url_that_is_not_a_websocket_url_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "foo", "--text", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo-agent talk: ") and err.count("\n") == 1 and "Traceback" not in err


async def test_a_path_without_a_websocket_is_one_line_and_exit_2(
    voice_server: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    url = voice_server.url.replace("/ws", "/nope")
    assert await asyncio.to_thread(main, ["--url", url, "--text", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo-agent talk: ") and err.count("\n") == 1 and "404" in err


async def test_no_reply_before_the_timeout_is_a_failure(
    voice_server: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    voice_server.services.dialogue.delay_s = 1.0  # a word a second: no reply within the timeout
    argv = ["--url", voice_server.url, "--text", "hello", "--timeout", "0.5"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "no reply within" in capsys.readouterr().err


async def test_a_text_turn_succeeds(
    voice_server: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["--url", voice_server.url, "--text", "hello"]) == 0
    assert "assistant.done" in capsys.readouterr().out


async def test_file_then_text_answers_both_turns(
    voice_server: SimpleNamespace, speech_clip: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "turn.wav"
    sf.write(str(path), speech_clip[: int(1.6 * 16000)], 16000)  # cut mid-speech: the flush ends the turn
    audio, rate = sf.read(str(path), dtype="float32")
    conv = await converse(voice_server.url, audio, rate, text="and one more thing", timeout=TIMEOUT)
    assert not conv.errors and not conv.of_type("assistant.interrupted")
    perceptions = conv.of_type("user.perception")
    assert [p["transcript"] for p in perceptions][1:] == ["and one more thing"]
    assert perceptions[0]["transcript"].endswith("seconds of speech")
    done = [e["turn_id"] for e in conv.of_type("assistant.done")]
    assert done == [p["turn_id"] for p in perceptions]
    assert voice_server.services.dialogue.interrupted == []
