"""The proxy middlewares for Ray Serve: a WebSocket whose replica is lost gets 1012, no other;
a WebSocket resuming a session carries the session header Ray routes by."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.middleware import Middleware

from whisperwire.ray_proxy import (
    LOST_REPLICA_CODE,
    LOST_REPLICA_REASON,
    ResumeAffinity,
    RetryLostReplica,
    middlewares,
)


class ReplicaLost(Exception):
    pass


def run(app: Any, scope_type: str = "websocket", incoming: list[dict[str, Any]] | None = None):
    """Runs `app` behind the middleware; returns what reached the client and the exception the
    app raised (if any)."""
    sent: list[dict[str, Any]] = []
    inbox = list(incoming or [{"type": "websocket.connect"}])

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> BaseException | None:
        try:
            await RetryLostReplica(app)({"type": scope_type}, receive, send)
        except ReplicaLost as exc:
            return exc
        return None

    return sent, asyncio.run(main())


def closes(sent: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(m["code"], m.get("reason", "")) for m in sent if m["type"] == "websocket.close"]


async def accept_then(receive: Any, send: Any, then: str) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": '{"type": "partial"}'})
    if then == "raise":
        raise ReplicaLost
    if then == "close":
        await send({"type": "websocket.close", "code": 1000, "reason": ""})
    if then == "client-left":
        await receive()


@pytest.mark.parametrize("how", ["return", "raise"])
def test_a_websocket_its_replica_left_open_is_closed_with_1012(how: str) -> None:
    sent, raised = run(lambda scope, receive, send: accept_then(receive, send, how))
    assert closes(sent) == [(LOST_REPLICA_CODE, LOST_REPLICA_REASON)]
    assert sent[-1]["type"] == "websocket.close"  # after everything the replica sent
    assert (raised is not None) == (how == "raise")  # the proxy still sees the failure


def test_a_websocket_the_replica_closed_gets_only_its_close() -> None:
    sent, _ = run(lambda scope, receive, send: accept_then(receive, send, "close"))
    assert closes(sent) == [(1000, "")]


def test_nothing_is_sent_to_a_client_that_left() -> None:
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1001}]
    sent, _ = run(
        lambda scope, receive, send: accept_then(receive, send, "client-left"), incoming=incoming
    )
    assert closes(sent) == []


def test_a_refused_handshake_is_left_as_the_replica_answered() -> None:
    async def deny(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})

    sent, _ = run(deny)
    assert closes(sent) == [(1008, "unauthorized")]

    async def gone_before_accept(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the replica died before it accepted: the proxy answers the handshake

    sent, _ = run(gone_before_accept)
    assert sent == []


def test_http_passes_through_untouched() -> None:
    async def page(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent, _ = run(page, scope_type="http", incoming=[{"type": "http.request"}])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_the_proxy_callback_returns_starlette_middlewares() -> None:
    entries = middlewares()
    assert all(isinstance(entry, Middleware) for entry in entries)
    assert [entry.cls for entry in entries] == [ResumeAffinity, RetryLostReplica]


def headers_seen(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The headers the app behind `ResumeAffinity` gets for `scope`."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])

    async def nothing(*_: Any) -> Any:
        return None

    asyncio.run(ResumeAffinity(app)(scope, nothing, nothing))
    return seen[0]


def test_a_resuming_websocket_is_given_the_session_header() -> None:
    scope = {"type": "websocket", "query_string": b"resume=abc-1&last_segment=4", "headers": []}
    assert headers_seen(scope) == [(b"x-session-id", b"abc-1")]
    assert scope["headers"] == []  # the caller's scope is left as it was


def test_the_session_header_is_left_alone_where_there_is_no_resume_or_one_already() -> None:
    own = [(b"X-Session-Id", b"mine")]
    assert headers_seen({"type": "websocket", "query_string": b"resume=abc", "headers": own}) == own
    plain = {"type": "websocket", "query_string": b"encoding=f32le", "headers": []}
    assert headers_seen(plain) == []
    http = {"type": "http", "query_string": b"resume=abc", "headers": []}
    assert headers_seen(http) == []


def test_the_session_header_name_follows_rays_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_SESSION_ID_HEADER_KEY", "X-Sticky")
    scope = {"type": "websocket", "query_string": b"resume=%C3%A9t%C3%A9", "headers": []}
    assert headers_seen(scope) == [(b"x-sticky", "été".encode())]
