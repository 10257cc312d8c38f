"""The web page in headless Chromium: a fake microphone plays a CREMA-D clip, the page streams it through
its AudioWorklet, the server's VAD ends the turn, and the page shows the completed turn (transcript,
emotion, reasoning, reply) and plays the reply."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from perception.evaluation import word_error_rate

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIP = "audio/1001_IEO_ANG_HI.ogg"


@pytest.fixture
def fake_mic(crema_dir: Path, tmp_path: Path) -> Path:
    """The clip with a second of silence before and a long silence after (Chromium loops the file)."""
    audio, rate = sf.read(crema_dir / CLIP, dtype="float32")
    audio = resample_poly(audio, 3, 1).astype(np.float32)  # 16 kHz -> 48 kHz
    rate *= 3
    wav = tmp_path / "mic.wav"
    padded = np.concatenate([np.zeros(rate, np.float32), audio, np.zeros(40 * rate, np.float32)])
    sf.write(wav, padded, rate, subtype="PCM_16")
    return wav


def test_page_completes_a_spoken_turn(server, fake_mic: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/setup.sh --with-browser installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={fake_mic}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.http_url + "/")
            page.click("#start")
            done = page.wait_for_selector('.turn[data-state="done"]', timeout=240_000)
            heard = done.query_selector(".transcript").inner_text()
            # the spoken clip says "It's eleven o'clock."; a margin, not one tiny-ASR word: WER <= 0.5
            assert word_error_rate(["It's eleven o'clock."], [heard]) <= 0.5, heard
            assert done.query_selector(".emotion-label").inner_text().strip()
            assert done.query_selector(".reasoning").inner_text().strip()
            assert done.query_selector(".reply").inner_text().strip()
            assert done.query_selector(".policy").inner_text().strip()
            played = page.evaluate("window.emoAgent && window.emoAgent.stats.replySamplesReceived")
            assert played and played > 0
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
