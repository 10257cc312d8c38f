"""The voice server: the web page, static files, a health check and the ``/ws`` websocket on one port.

``GET /`` serves ``voice/web/index.html``, ``GET /<file>`` the other files under ``voice/web/``, ``GET
/health`` answers ``200 ok``, ``GET /sessions/{id}/trajectory`` returns the session's trajectory log as JSON
(``{"session_id", "schema_version", "turns": [export rows]}``; 404 when nothing was logged, e.g. a session
without consent), ``GET /metrics`` the server's Prometheus metrics (:mod:`voice.metrics`), ``/ws``
upgrades to the voice protocol (:mod:`voice.protocol`), one :class:`~voice.session.Session` per
connection; anything else is 404. All of it is answered in ``process_request``, before any websocket
handshake. SIGTERM and SIGINT drain the server (:func:`drain`): no new connections, the replies in progress
finish within ``drain_timeout_s``, then every session gets a 1001 close; a second signal stops waiting.
``serve`` returns once everything has closed and the trajectory records still buffered have been written.

Access (:mod:`voice.auth`): with ``auth_token`` set, ``/ws``, ``/metrics`` and the trajectory need the token
(401 otherwise); ``/ws`` also refuses pages of other origins (403). ``/health`` and the page's files stay
open: they hold no data. Limits (:mod:`voice.limits`): sessions per server and per client address (a
typed ``error``, then a 1013 close), the message rate and idle timeout of each connection, keepalive pings.

    emo-agent serve --host 127.0.0.1 --port 8765       # the CLI calls run_server()
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voice import protocol as proto
from voice.auth import AccessPolicy, Refusal, select_subprotocol
from voice.limits import FrameGuard, GuardedConnection, SessionSlots
from voice.metrics import VoiceMetrics
from voice.protocol import MAX_SESSION_ID_CHARS
from voice.records import SCHEMA_VERSION
from voice.session import Session
from voice.vad import SileroVAD

if TYPE_CHECKING:
    from voice.services import ServerServices, TrajectoryReader

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
WS_PATH = "/ws"
METRICS_PATH = "/metrics"
TRAJECTORY_PATH_RE = re.compile(rf"^/sessions/([A-Za-z0-9_.:\-]{{1,{MAX_SESSION_ID_CHARS}}})/trajectory$")
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
    return _response(200, path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream"))


def _json_response(status: int, payload: dict[str, Any]) -> Response:
    return _response(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json")


def _response(
    status: int, body: bytes, content_type: str, extra_headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
            *extra_headers,
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def refusal_response(refusal: Refusal) -> Response:
    """A 401/403 with its one-line body (and ``WWW-Authenticate`` for a 401)."""
    return _response(refusal.status, refusal.body.encode(), "text/plain; charset=utf-8", refusal.headers)


def static_file(url_path: str, web_dir: Path = WEB_DIR) -> Path | None:
    """The file under ``web_dir`` that ``url_path`` names (``/`` is ``index.html``); None if there is none."""
    name = unquote(url_path).lstrip("/") or "index.html"
    try:
        candidate = (web_dir / name).resolve()
        if not candidate.is_relative_to(web_dir) or not candidate.is_file():
            return None
    except (ValueError, OSError):  # e.g. a NUL byte (%00) or a name the OS refuses
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


async def trajectory_response(trajectory: TrajectoryReader, session_id: str) -> Response:
    """The ``/sessions/{id}/trajectory`` answer: every logged turn as an export row, in time order."""
    records = await trajectory.read(session_id)
    if not records:
        missing = {"error": "no trajectory logged for this session", "session_id": session_id}
        return _json_response(404, missing)
    rows = [r.row() for r in records]
    return _json_response(200, {"session_id": session_id, "schema_version": SCHEMA_VERSION, "turns": rows})


def metrics_response(metrics: VoiceMetrics, request: Request) -> Response:
    """The ``/metrics`` answer: the Prometheus text format (OpenMetrics when ``Accept`` asks for it)."""
    body, content_type = metrics.render(request.headers.get("Accept"))
    return _response(200, body, content_type)


def request_handler(
    trajectory: TrajectoryReader | None,
    metrics: VoiceMetrics | None = None,
    access: AccessPolicy | None = None,
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    """:func:`process_request` plus ``GET /sessions/{id}/trajectory`` read from ``trajectory`` and ``GET
    /metrics`` from ``metrics``; ``access`` guards ``/ws`` (origin and token) and those two (token)."""
    policy = access if access is not None else AccessPolicy()

    async def handle(connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            refused = policy.refuse_websocket(request)
            return refusal_response(refused) if refused is not None else None
        if path == METRICS_PATH and metrics is not None:
            refused = policy.refuse_http(request)
            return refusal_response(refused) if refused is not None else metrics_response(metrics, request)
        match = TRAJECTORY_PATH_RE.match(path)
        if match is None or trajectory is None:
            return process_request(connection, request)
        refused = policy.refuse_http(request)
        if refused is not None:
            return refusal_response(refused)
        try:
            return await trajectory_response(trajectory, match.group(1))
        except Exception:  # Redis gone: say so, do not drop the connection with a traceback
            log.exception("reading the trajectory of %s failed", match.group(1))
            return connection.respond(503, "trajectory log unavailable\n")

    return handle


async def serve(
    services: ServerServices,
    host: str,
    port: int,
    *,
    ready: asyncio.Event | None = None,
    vad: SileroVAD | None = None,
    playback_lead_s: float = 0.5,
    handle_signals: bool = True,
    metrics: VoiceMetrics | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT or ``stop`` is set, then drain (:func:`drain`) and close; cancelling
    ``serve`` closes at once.

    ``ready`` is set once the socket listens. ``vad`` defaults to the bundled Silero model, loaded once and
    shared by all sessions. ``playback_lead_s`` bounds how far reply audio is sent ahead of real time.
    ``metrics`` (served at ``/metrics``) defaults to a fresh :class:`~voice.metrics.VoiceMetrics` of this
    server's own.
    """
    settings = services.settings.voice
    if vad is None:
        vad = await asyncio.to_thread(SileroVAD)
    if metrics is None:
        metrics = VoiceMetrics()
    access = AccessPolicy.from_settings(settings)
    slots = SessionSlots.from_settings(settings)
    sessions: set[Session] = set()
    stopping = stop if stop is not None else asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        peer = ws.remote_address
        client = str(peer[0]) if peer else "unknown"
        refused = slots.acquire(client)
        if refused is not None:
            log.warning("connection from %s refused: %s", peer, refused.code)
            await refuse_session(ws, refused.code, refused.message, metrics)
            return
        log.info("connection from %s", peer)
        try:
            if isinstance(ws, GuardedConnection):
                ws.limit(FrameGuard.from_settings(settings), settings.idle_timeout_s, metrics.error)
            with metrics.connection():
                session = Session(
                    ws, services, settings, vad, playback_lead_s=playback_lead_s, metrics=metrics
                )
                sessions.add(session)
                try:
                    await session.run()
                finally:
                    sessions.discard(session)
        finally:
            slots.release(client)

    # Frames over max_message_bytes get an error event; only frames beyond this hard limit close the
    # connection (code 1009), since the library must buffer a frame before anyone can look at it.
    hard_limit = max(4 * settings.max_message_bytes, 1 << 16)
    on_request = request_handler(getattr(services, "trajectory", None), metrics, access)
    async with ws_serve(
        handler,
        host,
        port,
        process_request=on_request,
        max_size=hard_limit,
        create_connection=GuardedConnection,
        select_subprotocol=select_subprotocol,
        ping_interval=settings.ping_interval_s or None,
        ping_timeout=settings.ping_timeout_s or None,
    ) as server:
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stopping.is_set():  # the second signal: close every session now
                log.warning("stopping at once")
                server.close()
            stopping.set()

        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, on_signal)
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
            await stopping.wait()
            await drain(server, sessions, settings.drain_timeout_s)
            server.close()
            await server.wait_closed()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
    buffer = getattr(services.trajectory, "write_buffer", None)
    if buffer is not None and buffer.pending:  # the sessions' last turns, if the log was unreachable
        await buffer.flush()
    log.info("voice server stopped")


async def drain(server: Server, sessions: set[Session], timeout_s: float) -> None:
    """Stop listening (a handshake in progress gets a 503), let each session's turn in progress finish
    within ``timeout_s`` and close the sessions with 1001 (:meth:`Session.drain`)."""
    log.info("stopping: %d sessions get up to %.1f s to finish their replies", len(sessions), timeout_s)
    server.server.close()
    await asyncio.gather(*(session.drain(timeout_s) for session in list(sessions)))


async def refuse_session(ws: ServerConnection, code: str, message: str, metrics: VoiceMetrics) -> None:
    """Tell a client why it gets no session (a typed ``error``), then close with 1013 (try again later):
    browsers see neither an HTTP status nor a body of a refused handshake, but they do see this."""
    metrics.error(code)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(proto.encode(proto.error_event(code, message)))
        await ws.close(1013, code)


async def run_server(services: ServerServices, host: str, port: int) -> None:
    """What ``emo-agent serve`` awaits: serve ``services`` until SIGTERM/SIGINT, then return.

    The caller owns ``services`` (creates them in this event loop and closes them afterwards).
    """
    await serve(services, host, port)
