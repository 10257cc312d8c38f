"""The voice server: the web page, static files, a health check and the ``/ws`` websocket on one port.

``GET /`` serves ``voice/web/index.html``, ``GET /<file>`` the other files under ``voice/web/``, ``GET
/health`` answers ``200 ok``, ``/ws`` upgrades to the voice protocol (:mod:`voice.protocol`), one
:class:`~voice.session.Session` per connection; anything else is 404. All of it is answered in
``process_request``, before any websocket handshake. SIGTERM and SIGINT close the server (open sessions get
a 1001 close) and ``serve`` returns once everything has closed.

    emo-agent serve --host 127.0.0.1 --port 8765       # the CLI calls run_server()
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voice.session import Session
from voice.vad import SileroVAD

if TYPE_CHECKING:
    from agent.wiring import Services

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
WS_PATH = "/ws"
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def _file_response(path: Path) -> Response:
    body = path.read_bytes()
    headers = Headers(
        [
            ("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream")),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(200, "OK", headers, body)


def static_file(url_path: str, web_dir: Path = WEB_DIR) -> Path | None:
    """The file under ``web_dir`` that ``url_path`` names (``/`` is ``index.html``); None if there is none."""
    name = unquote(url_path).lstrip("/") or "index.html"
    candidate = (web_dir / name).resolve()
    if not candidate.is_relative_to(web_dir) or not candidate.is_file():
        return None
    return candidate


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """Answer plain HTTP; return None only for ``/ws`` so the websocket handshake proceeds."""
    path = urlsplit(request.path).path
    if path == WS_PATH:
        return None
    if path == "/health":
        return connection.respond(200, "ok")
    file = static_file(path)
    if file is not None:
        return _file_response(file)
    return connection.respond(404, "not found\n")


async def serve(
    services: Services,
    host: str,
    port: int,
    *,
    ready: asyncio.Event | None = None,
    vad: SileroVAD | None = None,
    playback_lead_s: float = 0.5,
    handle_signals: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); then close the server and wait until it has closed.

    ``ready`` is set once the socket listens. ``vad`` defaults to the bundled Silero model, loaded once and
    shared by all sessions. ``playback_lead_s`` bounds how far reply audio is sent ahead of real time.
    """
    settings = services.settings.voice
    if vad is None:
        vad = await asyncio.to_thread(SileroVAD)

    async def handler(ws: ServerConnection) -> None:
        peer = ws.remote_address
        log.info("connection from %s", peer)
        await Session(ws, services, settings, vad, playback_lead_s=playback_lead_s).run()

    # Frames over max_message_bytes get an error event; only frames beyond this hard limit close the
    # connection (code 1009), since the library must buffer a frame before anyone can look at it.
    hard_limit = max(4 * settings.max_message_bytes, 1 << 16)
    async with ws_serve(handler, host, port, process_request=process_request, max_size=hard_limit) as server:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, server.close)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
                    pass
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "voice server listening: http://%s:%d/ (websocket ws://%s:%d%s)",
            shown,
            port,
            shown,
            port,
            WS_PATH,
        )
        if ready is not None:
            ready.set()
        try:
            await server.wait_closed()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
    log.info("voice server stopped")


async def run_server(services: Services, host: str, port: int) -> None:
    """What ``emo-agent serve`` awaits: serve ``services`` until SIGTERM/SIGINT, then return.

    The caller owns ``services`` (creates them in this event loop and closes them afterwards).
    """
    await serve(services, host, port)
