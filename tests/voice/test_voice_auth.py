"""Access to the voice server: the token (header, subprotocol, query), the origin check, which endpoints
need what, the refusals' answers, and the CLI client passing the token."""

from __future__ import annotations

import asyncio
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request

from tests.voice.test_voice_session import start, text_turn
from voice import auth
from voice.auth import AccessPolicy, candidate_tokens
from voice.client import converse
from voice.client import main as client_main

TOKEN = "s3cret-Token_42"


def request(path: str = "/ws", **headers: str | list[str]) -> Request:
    items: list[tuple[str, str]] = []
    for name, value in headers.items():
        for v in value if isinstance(value, list) else [value]:
            items.append((name.replace("_", "-"), v))
    return Request(path, Headers(items))


# ------------------------------------------------------------------------------------------ the policy


def test_without_a_token_everything_is_let_in() -> None:
    policy = AccessPolicy()
    assert not policy.token_required
    assert policy.refuse_websocket(request()) is None
    assert policy.refuse_http(request("/metrics")) is None


def test_the_token_is_read_from_bearer_subprotocol_and_query() -> None:
    policy = AccessPolicy(TOKEN)
    assert policy.refuse_http(request("/metrics", Authorization=f"Bearer {TOKEN}")) is None
    assert policy.refuse_http(request("/metrics", Authorization=f"bearer   {TOKEN} ")) is None
    offered = f"emo-agent, emo-agent.token.{TOKEN}"
    assert policy.refuse_websocket(request(Sec_WebSocket_Protocol=offered)) is None
    assert policy.refuse_websocket(request(f"/ws?access_token={TOKEN}")) is None


@pytest.mark.parametrize(
    "req",
    [
        request(),
        request(Authorization="Bearer wrong"),
        request(Authorization=f"Basic {TOKEN}"),
        request(Authorization="Bearer"),
        request(Authorization=f"Bearer {TOKEN}x"),
        request(Authorization=f"Bearer {TOKEN[:-1]}"),
        request(Sec_WebSocket_Protocol=f"emo-agent.token.{TOKEN}x"),
        request(Sec_WebSocket_Protocol=TOKEN),
        request("/ws?access_token=wrong"),
        request(f"/ws?token={TOKEN}"),
    ],
)
def test_a_missing_or_wrong_token_is_refused_with_401(req: Request) -> None:
    refused = AccessPolicy(TOKEN).refuse_websocket(req)
    assert refused is not None and refused.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="emo-agent"') in refused.headers


def test_one_right_token_among_several_candidates_is_enough() -> None:
    req = request(f"/ws?access_token={TOKEN}", Authorization=["Bearer nope", "Bearer also-nope"])
    assert len(candidate_tokens(req)) == 3
    assert AccessPolicy(TOKEN).token_ok(req)


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    policy = AccessPolicy(TOKEN)
    assert not policy.token_ok(request(Authorization="Bearer x"))
    assert policy.token_ok(request(Authorization=f"Bearer {TOKEN}"))
    assert len(calls) == 2
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: not even the length is compared


def test_non_ascii_and_odd_headers_do_not_raise() -> None:
    policy = AccessPolicy("tökén")
    assert policy.token_ok(request("/ws?access_token=t%C3%B6k%C3%A9n"))
    assert not policy.token_ok(request("/ws?access_token=%ff%fe"))
    assert not policy.token_ok(request("/ws?access_token"))
    assert policy.refuse_websocket(request(Origin="http://[::1", Host="x")) is not None


def test_the_servers_own_page_and_non_browsers_pass_the_origin_check() -> None:
    policy = AccessPolicy()
    assert policy.origin_ok(request(Host="127.0.0.1:8765"))  # no Origin: not a browser page
    assert policy.origin_ok(request(Origin="http://127.0.0.1:8765", Host="127.0.0.1:8765"))
    assert policy.origin_ok(request(Origin="https://Talk.Example.org", Host="talk.example.org"))


@pytest.mark.parametrize(
    "origin, host",
    [
        ("http://evil.example", "127.0.0.1:8765"),
        ("http://127.0.0.1:9999", "127.0.0.1:8765"),  # another port is another origin
        ("null", "127.0.0.1:8765"),  # a sandboxed frame or a file:// page
        ("file://", "127.0.0.1:8765"),
        ("ws://127.0.0.1:8765", "127.0.0.1:8765"),
    ],
)
def test_pages_of_other_origins_are_refused_with_403(origin: str, host: str) -> None:
    refused = AccessPolicy().refuse_websocket(request(Origin=origin, Host=host))
    assert refused is not None and refused.status == 403


def test_two_origin_headers_are_refused() -> None:
    req = request(Origin=["http://127.0.0.1:8765", "http://evil.example"], Host="127.0.0.1:8765")
    assert not AccessPolicy().origin_ok(req)


def test_listed_origins_and_the_wildcard_are_allowed() -> None:
    policy = AccessPolicy(allowed_origins=["https://talk.example.org/"])
    assert policy.origin_ok(request(Origin="https://talk.example.org", Host="127.0.0.1:8765"))
    assert not policy.origin_ok(request(Origin="https://other.example.org", Host="127.0.0.1:8765"))
    assert AccessPolicy(allowed_origins=["*"]).origin_ok(request(Origin="null", Host="x"))


def test_the_origin_is_checked_before_the_token() -> None:
    refused = AccessPolicy(TOKEN).refuse_websocket(
        request(Origin="http://evil.example", Host="127.0.0.1:8765", Authorization=f"Bearer {TOKEN}")
    )
    assert refused is not None and refused.status == 403


def test_the_token_subprotocol_is_never_selected() -> None:
    offered: Any = ["emo-agent.token.abc", "emo-agent"]
    assert auth.select_subprotocol(None, offered) == "emo-agent"  # type: ignore[arg-type]
    assert auth.select_subprotocol(None, ["emo-agent.token.abc"]) is None  # type: ignore[arg-type]
    assert auth.select_subprotocol(None, []) is None  # type: ignore[arg-type]


def test_the_token_setting_is_kept_out_of_reprs() -> None:
    from voice.config import VoiceSettings

    settings = VoiceSettings(auth_token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert AccessPolicy.from_settings(settings).token_required


# ------------------------------------------------------------------------------------- a real server


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def guarded_server(server_factory: Callable[..., Any]) -> Callable[..., Any]:
    return server_factory


async def handshake_status(url: str, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode()


async def test_the_websocket_needs_the_token(guarded_server) -> None:
    server = await guarded_server(auth_token=TOKEN)
    status, body = await handshake_status(server.url)
    assert (status, body) == (401, "access token missing or wrong\n")
    status, _ = await handshake_status(server.url, additional_headers={"Authorization": "Bearer nope"})
    assert status == 401
    # each way of giving the token opens a working session
    ways: list[dict[str, Any]] = [
        {"uri": server.url, "additional_headers": {"Authorization": f"Bearer {TOKEN}"}},
        {"uri": server.url, "subprotocols": ["emo-agent", f"emo-agent.token.{TOKEN}"]},
        {"uri": f"{server.url}?access_token={TOKEN}"},
    ]
    for way in ways:
        async with connect(**way) as ws:
            await start(ws)
            assert (await text_turn(ws))[-1]["type"] == "assistant.done"
            if "subprotocols" in way:
                assert ws.subprotocol == "emo-agent"  # the token is not echoed back


async def test_foreign_pages_are_refused_and_the_own_page_is_not(guarded_server) -> None:
    server = await guarded_server()
    status, body = await handshake_status(server.url, origin="http://evil.example")
    assert status == 403 and "origin" in body
    async with connect(server.url, origin=f"http://127.0.0.1:{server.port}") as ws:
        await start(ws)
    listed = await guarded_server(allowed_origins=["http://talk.example"])
    async with connect(listed.url, origin="http://talk.example") as ws:
        await start(ws)


async def test_which_http_endpoints_need_the_token(guarded_server) -> None:
    server = await guarded_server(auth_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/health", "/", "/app.js"):  # no data in them: open, so probes and the page load
        status, _, _ = await asyncio.to_thread(http_get, server.http + path)
        assert status == 200, path
    for path in ("/metrics", "/sessions/abc/trajectory"):
        status, headers, body = await asyncio.to_thread(http_get, server.http + path)
        assert (status, body) == (401, "access token missing or wrong\n"), path
        assert headers["WWW-Authenticate"] == 'Bearer realm="emo-agent"'
        status, _, _ = await asyncio.to_thread(http_get, server.http + path, {"Authorization": "Bearer no"})
        assert status == 401, path
    status, _, body = await asyncio.to_thread(http_get, server.http + "/metrics", bearer)
    assert status == 200 and "# TYPE" in body
    status, _, body = await asyncio.to_thread(http_get, server.http + "/sessions/abc/trajectory", bearer)
    assert status == 404 and json.loads(body)["session_id"] == "abc"  # allowed in; nothing logged for abc
    status, _, _ = await asyncio.to_thread(http_get, f"{server.http}/metrics?access_token={TOKEN}")
    assert status == 200


async def test_without_a_token_setting_nothing_needs_one(guarded_server) -> None:
    server = await guarded_server()
    status, _, _ = await asyncio.to_thread(http_get, server.http + "/metrics")
    assert status == 200
    async with connect(server.url) as ws:
        await start(ws)


async def test_the_client_sends_the_token(guarded_server, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    server = await guarded_server(auth_token=TOKEN)
    conv = await converse(server.url, text="hello", token=TOKEN, timeout=15)
    assert conv.first("assistant.done") is not None
    monkeypatch.delenv("EMO_VOICE__AUTH_TOKEN", raising=False)
    code = await asyncio.to_thread(client_main, ["--text", "hi", "--url", server.url, "--timeout", "15"])
    err = capsys.readouterr().err
    assert code == 2 and "401" in err and "token is missing" in err and "Traceback" not in err
    code = await asyncio.to_thread(client_main, ["--text", "hi", "--url", server.url, "--token", "bad"])
    assert code == 2 and "token is wrong" in capsys.readouterr().err
    # the default token (emo-agent talk passes the EMO_VOICE__AUTH_TOKEN setting, kept out of `ps`)
    argv = ["--text", "hi", "--url", server.url, "--timeout", "15"]
    code = await asyncio.to_thread(client_main, argv, TOKEN)
    assert code == 0, capsys.readouterr().err


async def test_a_busy_server_is_reported_by_the_client(guarded_server, capsys) -> None:
    server = await guarded_server(max_sessions=1)
    async with connect(server.url) as ws:
        await start(ws)
        code = await asyncio.to_thread(client_main, ["--text", "hi", "--url", server.url])
    err = capsys.readouterr().err
    assert code == 1 and "server_busy" in err and "Traceback" not in err


def test_emo_agent_talk_passes_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.cli
    import voice.client

    seen: list[tuple[list[str], str | None]] = []
    monkeypatch.setattr(
        voice.client, "main", lambda argv, default_token=None: seen.append((argv, default_token)) or 0
    )
    assert agent.cli.main(["talk", "clip.wav", "--token", TOKEN]) == 0
    assert seen and seen[0][0][-2:] == ["--token", TOKEN]
    monkeypatch.setenv("EMO_VOICE__AUTH_TOKEN", "from-the-environment")  # the setting is the default
    assert agent.cli.main(["talk", "clip.wav"]) == 0
    assert "--token" not in seen[1][0] and seen[1][1] == "from-the-environment"
