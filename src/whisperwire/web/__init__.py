"""The browser page at `GET /`: plain HTML, JS and CSS shipped in this package, no build step,
nothing fetched from elsewhere (it works offline).

The page holds no secret, so it answers without a key even on a server started with
--api-key: its WebSocket (`/` on the same port) asks for the key as every client's does,
from the page's key field (`?token=`). The WebSocket endpoint shares the path `/`: Starlette
routes an HTTP GET and a WebSocket upgrade on one path apart by the scope's type.

Every response carries a Content-Security-Policy that lets the page run its own scripts only
(no inline script, no event-handler attribute) and connect only to its own origin: a second
wall behind the page's rule of putting transcript text into the DOM as text, never as HTML.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import Response

__all__ = ["ASSETS", "install", "policy", "read"]

# name -> media type: the files the page is made of, the only ones served
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "worklet.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# A Host header fit to be named in the policy: a name or an address, and a port.
HOST = re.compile(r"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def policy(host: str | None) -> str:
    """The page's Content-Security-Policy. 'self' in connect-src covers ws:// and wss:// to
    the page's own host in browsers of CSP level 3; older ones (some Safari releases) need the
    WebSocket URLs spelt out, from the request's Host."""
    connect = "'self'"
    if host and HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return POLICY.format(connect=connect)


@cache
def read(name: str) -> bytes:
    """One of the page's files, from the installed package (a wheel or an editable install)."""
    return resources.files(__name__).joinpath(name).read_bytes()


def _asset(name: str, request: Request) -> Response:
    headers = {
        "Content-Security-Policy": policy(request.headers.get("host")),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Response(read(name), media_type=ASSETS[name], headers=headers)


def install(app: FastAPI) -> None:
    """Add `GET /` (the page) and `GET /web/<file>` (its script, worklet and style), and
    HEAD for each: what uptime checks and `curl -I` send."""
    for name in ASSETS:
        path = "/" if name == "index.html" else f"/web/{name}"
        app.add_api_route(path, _endpoint(name), methods=["GET", "HEAD"], include_in_schema=False)


def _endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
    """The route that serves the page's file `name`."""

    async def serve(request: Request) -> Response:
        return _asset(name, request)

    return serve
