"""The web page in headless Chromium against the real server (fake models): a typed turn and a spoken one.

The spoken turn uses Chromium's fake microphone fed with a real CREMA-D sentence, so capture, the
AudioWorklet downsampler, the websocket and the turn cards are all exercised.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from tests.voice.voice_fakes import skip_or_fail

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
async def browser_factory():
    try:
        import playwright.async_api as playwright_api
    except ImportError:
        skip_or_fail("playwright is not installed")
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"chromium not installed ({CHROMIUM})")
    browsers = []
    async with playwright_api.async_playwright() as p:

        async def launch(*extra: str):
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--autoplay-policy=no-user-gesture-required", *extra],
            )
            browsers.append(browser)
            return browser

        yield launch
        for browser in browsers:
            await browser.close()


async def test_typed_turn_shows_perception_and_reply(voice_server: SimpleNamespace, browser_factory) -> None:
    browser = await browser_factory()
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(voice_server.http + "/")
    await page.wait_for_selector('#connection[data-connection="open"]', timeout=10_000)
    session_id = await page.get_attribute("#session-id", "data-session-id")
    assert session_id
    await page.fill("#text-input", "I lost my keys again")
    await page.click("#send-button")
    card = page.locator('#turns li.turn[data-state="done"]')
    await card.wait_for(timeout=15_000)
    assert await card.locator('[data-field="transcript"]').inner_text() == "I lost my keys again"
    assert await card.locator('[data-field="label"]').text_content() == "neutral"
    assert await card.locator('[data-field="policy"]').inner_text() == "empathize"
    assert "hear you" in await card.locator('[data-field="reply"]').inner_text()
    assert await card.locator(".scores li").count() >= 2
    assert await card.locator(".evidence li").count() == 1
    # The live trajectory panel: one point per turn, coloured by label, with the reply's policy.
    points = page.locator("#trajectory-chart g.turn-point")
    assert await points.count() == 1
    assert await page.get_attribute("#consent", "data-consent") == "true"
    await page.fill("#text-input", "Still no keys")
    await page.click("#send-button")
    await page.locator('#turns li.turn[data-state="done"]').nth(1).wait_for(timeout=15_000)
    assert await points.count() == 2
    await page.wait_for_selector('#trajectory-chart g.turn-point:nth-of-type(2)[data-policy="empathize"]')
    assert await points.nth(1).get_attribute("data-label") == "neutral"
    assert "Turn 2: neutral" in await page.inner_text("#trajectory-summary")
    assert "Turn 2" in await points.nth(1).locator("title").text_content()
    # Reloading resumes the stored session; the panel refills from /sessions/{id}/trajectory.
    await page.reload()
    await page.wait_for_selector('#connection[data-connection="open"]', timeout=10_000)
    assert await page.get_attribute("#session-id", "data-session-id") == session_id
    assert "resumed" in await page.inner_text("#connection")
    await page.wait_for_selector('#trajectory-chart[data-turns="2"]', timeout=10_000)
    await page.click("#new-session-button")
    await page.wait_for_function(
        "old => (document.querySelector('#session-id').dataset.sessionId || old) !== old",
        arg=session_id,
        timeout=10_000,
    )
    assert await page.locator("#turns li.turn").count() == 0
    assert await points.count() == 0
    assert not errors


async def test_microphone_turn(voice_server: SimpleNamespace, browser_factory, speech_clip, tmp_path) -> None:
    wav = tmp_path / "speech.wav"
    audio = np.concatenate([np.zeros(8000, np.float32), speech_clip, np.zeros(24000, np.float32)])
    sf.write(wav, np.tile(audio, 3), 16000, subtype="PCM_16")
    browser = await browser_factory(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    )
    context = await browser.new_context(permissions=["microphone"])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(voice_server.http + "/")
    await page.wait_for_selector('#connection[data-connection="open"]', timeout=10_000)
    await page.click("#start")
    await page.wait_for_selector('#start[data-state="on"]', timeout=10_000)
    card = page.locator("#turns li.turn").first
    await card.wait_for(timeout=20_000)
    transcript = await card.locator('[data-field="transcript"]').inner_text()
    assert transcript.endswith("seconds of speech")
    seconds = float(transcript.split()[0])
    assert 1.0 < seconds < 4.0  # one sentence, cut by the VAD
    assert (
        await page.locator("#trajectory-chart g.turn-point").count()
        == await page.locator("#turns li.turn").count()
    )
    await page.click("#start")
    assert not errors
