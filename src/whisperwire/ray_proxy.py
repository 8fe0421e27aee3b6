"""What runs in Ray Serve's proxy for whisperwire: a WebSocket whose replica is lost is closed
with 1012 ("service restart": reconnect) instead of dropped, and a client that reconnects to
resume its session is sent to the replica that holds it.

When an ingress replica dies, Ray's proxy ends the client's request without a close frame, and
its uvicorn drops the TCP connection: the client sees 1006 (abnormal closure), which no client
can tell from a network fault. Ray applies the Starlette middlewares that the function named by
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH returns to its proxy's ASGI app; `middlewares` is
that function. Plain ASGI, no Ray import: unit-tested without a cluster.

A session lives in the replica that accepted it; a client whose connection dropped resumes
it with `?resume=SESSION_ID`. Ray's proxy hands a request's session id (the `x-session-id`
header, or the name in RAY_SERVE_SESSION_ID_HEADER_KEY) to the router, which sends it to the
replica holding that session (`ray_router`); `ResumeAffinity` sets that header from the query.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.middleware import Middleware

__all__ = [
    "CALLBACK",
    "LOST_REPLICA_CODE",
    "LOST_REPLICA_REASON",
    "ResumeAffinity",
    "RetryLostReplica",
    "middlewares",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

CALLBACK = "whisperwire.ray_proxy:middlewares"  # RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
LOST_REPLICA_CODE = 1012  # RFC 6455 "service restart": the client should reconnect
LOST_REPLICA_REASON = "server replica lost: reconnect"


class RetryLostReplica:
    """Closes an accepted WebSocket with 1012 when the app behind it ends (or fails) without
    closing it and without the client having gone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        state = {"accepted": False, "ended": False}

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                state["ended"] = True
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] in ("websocket.close", "websocket.http.response.start"):
                state["ended"] = True
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        finally:
            if state["accepted"] and not state["ended"]:
                # The client may be gone too; then there is nobody left to tell.
                with contextlib.suppress(Exception):
                    await send(
                        {
                            "type": "websocket.close",
                            "code": LOST_REPLICA_CODE,
                            "reason": LOST_REPLICA_REASON,
                        }
                    )


class ResumeAffinity:
    """Gives a WebSocket that asks to resume a session (`?resume=ID`) the session header Ray
    routes by, unless it has one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = os.environ.get("RAY_SERVE_SESSION_ID_HEADER_KEY", "x-session-id").lower()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), encoding="latin-1")
            session = (query.get("resume") or [""])[0]
            headers = list(scope.get("headers", []))
            named = self.header.replace("-", "_")
            has = any(k.decode("latin-1").lower().replace("-", "_") == named for k, _ in headers)
            if session and not has:
                headers.append((self.header.encode("latin-1"), session.encode("latin-1")))
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def middlewares() -> list[Middleware]:
    """Ray Serve's proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH)."""
    return [Middleware(ResumeAffinity), Middleware(RetryLostReplica)]
