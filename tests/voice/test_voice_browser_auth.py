"""The web page against a server that wants its access token, in headless Chromium: the token given once
in the address (#token=...) opens the websocket (as a subprotocol) and the page's own fetch of the
trajectory (as a Bearer header); without it the page asks for one; a foreign origin is refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from tests.voice.test_voice_browser import browser_factory  # noqa: F401  (the fixture)
from tests.voice.voice_fakes import free_port, make_services
from voice.server import serve
from voice.vad import SileroVAD

pytestmark = pytest.mark.browser

TOKEN = "page-token_1234"


@pytest.fixture
async def token_server(silero: SileroVAD) -> AsyncIterator[SimpleNamespace]:
    services = make_services(auth_token=TOKEN)
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(services, "127.0.0.1", port, ready=ready, vad=silero, playback_lead_s=0.2, handle_signals=False)
    )
    await asyncio.wait_for(ready.wait(), 10)
    yield SimpleNamespace(http=f"http://127.0.0.1:{port}", port=port)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_page_passes_its_token(token_server: SimpleNamespace, browser_factory) -> None:  # noqa: F811
    browser = await browser_factory()
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{token_server.http}/#token={TOKEN}")
    await page.wait_for_selector('#connection[data-connection="open"]', timeout=10_000)
    assert "token" not in await page.evaluate("location.href")  # taken out of the address bar
    await page.fill("#text-input", "hello there")
    await page.click("#send-button")
    await page.locator('#turns li.turn[data-state="done"]').wait_for(timeout=15_000)
    # A reload resumes the session and refills the panel from /sessions/{id}/trajectory: the fetch, too,
    # carries the token (the endpoint answers 401 without it).
    await page.reload()
    await page.wait_for_selector('#connection[data-connection="open"]', timeout=10_000)
    await page.wait_for_selector('#trajectory-chart[data-turns="1"]', timeout=10_000)
    assert await page.is_hidden("#token-form")
    assert not errors


async def test_without_a_token_the_page_asks_for_one(token_server: SimpleNamespace, browser_factory) -> None:  # noqa: F811
    browser = await browser_factory()
    page = await browser.new_page()
    await page.goto(f"{token_server.http}/")
    await page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
    assert await page.get_attribute("#connection", "data-connection") == "closed"
    assert await page.locator('#errors li[data-code="connection"]').count() == 1
    await page.fill("#token-input", "wrong")
    await page.click("#token-button")
    await page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
    await page.wait_for_function("document.querySelectorAll('#errors li').length === 2", timeout=10_000)
    await page.fill("#token-input", TOKEN)
    await page.click("#token-button")
    await page.wait_for_selector('#connection[data-connection="open"]', timeout=10_000)
    assert await page.is_hidden("#token-form")


async def test_a_page_of_another_origin_cannot_open_the_websocket(
    token_server: SimpleNamespace,
    browser_factory,  # noqa: F811
) -> None:
    browser = await browser_factory()
    page = await browser.new_page()
    await page.goto(f"{token_server.http}/health")  # any page of this server's origin ...
    same = await page.evaluate(OPEN_SOCKET, f"ws://127.0.0.1:{token_server.port}/ws")
    assert same == "open"
    # ... and one of another origin (localhost is not 127.0.0.1), holding the right token all the same
    await page.goto(f"http://localhost:{token_server.port}/health")
    other = await page.evaluate(OPEN_SOCKET, f"ws://127.0.0.1:{token_server.port}/ws")
    assert other == "refused"


OPEN_SOCKET = f"""url => new Promise(resolve => {{
  const ws = new WebSocket(url, ["emo-agent", "emo-agent.token.{TOKEN}"]);
  ws.onopen = () => {{ ws.close(); resolve("open"); }};
  ws.onerror = () => resolve("refused");
}})"""
