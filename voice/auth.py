"""Who may use the voice server: the shared access token and the origins whose pages may open the websocket.

No I/O: :class:`AccessPolicy` looks at a handshake or HTTP :class:`~websockets.http11.Request` and says
whether to refuse it (:class:`Refusal`, answered by ``voice.server`` before anything is served).

The token (``EMO_VOICE__AUTH_TOKEN``; empty means none is needed) is read from, in this order of preference:

- ``Authorization: Bearer TOKEN`` — any HTTP client, the CLI client, Prometheus;
- the websocket subprotocol ``emo-agent.token.TOKEN``, offered beside ``emo-agent`` (browsers cannot set
  headers on a WebSocket; the server answers with ``emo-agent``, never echoing the token);
- the query parameter ``access_token`` (RFC 6750 §2.3), for clients that can do neither; query strings
  can end up in proxy logs, so prefer the others.

Tokens are compared in constant time (:func:`hmac.compare_digest` over SHA-256 digests, so not even the
length leaks). Origins: a browser names the page that opens a websocket in ``Origin``; a page of another
site must not be able to talk to a server on ``127.0.0.1`` from its visitor's browser (cross-site websocket
hijacking), so only the server's own page (an ``Origin`` whose host and port are the request's ``Host``)
and the ``allowed_origins`` listed may connect. Requests without ``Origin`` are not from a browser page and
go on to the token check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request
    from websockets.typing import Subprotocol

    from voice.config import VoiceSettings

SUBPROTOCOL = "emo-agent"
TOKEN_SUBPROTOCOL_PREFIX = "emo-agent.token."
TOKEN_QUERY_PARAMETER = "access_token"
ANY_ORIGIN = "*"


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer that ends the request: ``status`` with a one-line ``body``."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


UNAUTHORIZED = Refusal(
    401,
    "access token missing or wrong\n",
    (("WWW-Authenticate", 'Bearer realm="emo-agent"'),),
)
FORBIDDEN_ORIGIN = Refusal(403, "this page's origin may not open the voice websocket\n")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class AccessPolicy:
    """The token and origin rules of one server. ``token`` empty: no token needed."""

    def __init__(self, token: str = "", allowed_origins: Iterable[str] = ()) -> None:
        self._token_digest = _digest(token) if token else None
        self._origins = frozenset(_normal_origin(o) for o in allowed_origins if o.strip())

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> AccessPolicy:
        return cls(settings.auth_token.get_secret_value(), settings.allowed_origins)

    @property
    def token_required(self) -> bool:
        return self._token_digest is not None

    # ------------------------------------------------------------------------------------------- checks

    def refuse_http(self, request: Request) -> Refusal | None:
        """For an HTTP endpoint that needs the token (``/metrics``, ``/sessions/{id}/trajectory``)."""
        return None if self.token_ok(request) else UNAUTHORIZED

    def refuse_websocket(self, request: Request) -> Refusal | None:
        """For the ``/ws`` handshake: the origin first (403), then the token (401)."""
        if not self.origin_ok(request):
            return FORBIDDEN_ORIGIN
        return self.refuse_http(request)

    def token_ok(self, request: Request) -> bool:
        """True when no token is needed or one of the request's candidate tokens is the right one."""
        if self._token_digest is None:
            return True
        found = False
        for candidate in candidate_tokens(request):
            # Every candidate is compared, so the time taken does not say which one (if any) matched.
            found |= hmac.compare_digest(_digest(candidate), self._token_digest)
        return found

    def origin_ok(self, request: Request) -> bool:
        origins = request.headers.get_all("Origin")
        if not origins:
            return True  # not a browser page: the CLI, a script, a test
        if len(origins) > 1:
            return False
        origin = _normal_origin(origins[0])
        if ANY_ORIGIN in self._origins or origin in self._origins:
            return True
        return same_origin(origin, request.headers.get_all("Host"))


def same_origin(origin: str, hosts: Sequence[str]) -> bool:
    """True when ``origin`` (``scheme://host[:port]``) names the host the request was sent to."""
    if len(hosts) != 1:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return False
    host = hosts[0].strip().lower()
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == host


def candidate_tokens(request: Request) -> list[str]:
    """Every token the request offers: Bearer credentials, token subprotocols, ``access_token`` values."""
    found: list[str] = []
    for value in request.headers.get_all("Authorization"):
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            found.append(credentials.strip())
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        for offered in value.split(","):
            offered = offered.strip()
            if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(offered) > len(TOKEN_SUBPROTOCOL_PREFIX):
                found.append(offered[len(TOKEN_SUBPROTOCOL_PREFIX) :])
    try:
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=False)
    except ValueError:
        query = {}
    found.extend(query.get(TOKEN_QUERY_PARAMETER, []))
    return found


def select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Answer ``emo-agent`` when the client offered it (a browser that sent its token as a subprotocol must
    get one of its offers back); otherwise no subprotocol. The token subprotocol is never selected."""
    for subprotocol in offered:
        if subprotocol == SUBPROTOCOL:
            return subprotocol
    return None
