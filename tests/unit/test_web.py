"""The browser page's routes (whisperwire.web) on a bare app, and its scripts' one rule:
text from the server reaches the DOM as text, never as HTML."""

from __future__ import annotations

import re

from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient

from whisperwire import web


def app_with_page() -> FastAPI:
    app = FastAPI()
    web.install(app)

    async def echo(ws: WebSocket) -> None:  # the WebSocket endpoint shares the path
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    app.add_api_websocket_route("/", echo)
    return app


def test_the_page_and_the_websocket_share_the_path() -> None:
    client = TestClient(app_with_page())
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="web/app.js"' in page.text
    with client.websocket_connect("/") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"


def test_every_file_is_served_with_its_type_and_policy() -> None:
    client = TestClient(app_with_page())
    for name, media_type in web.ASSETS.items():
        url = "/" if name == "index.html" else f"/web/{name}"
        reply = client.get(url)
        assert reply.status_code == 200, name
        assert reply.headers["content-type"] == media_type
        assert reply.content == web.read(name)
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert reply.headers["x-content-type-options"] == "nosniff"
        head = client.head(url)
        assert head.status_code == 200 and head.content == b"", name
        assert head.headers["content-type"] == media_type
        assert head.headers["content-length"] == str(len(web.read(name)))
    for other in ("/web/__init__.py", "/web/../server.py", "/web/", "/index.html"):
        assert client.get(other).status_code == 404, other


def test_the_policy_names_the_pages_own_websocket_only() -> None:
    assert "connect-src 'self' ws://127.0.0.1:9002 wss://127.0.0.1:9002;" in web.policy(
        "127.0.0.1:9002"
    )
    assert "ws://[::1]:9002 wss://[::1]:9002;" in web.policy("[::1]:9002")
    assert "connect-src 'self' ws://example.com wss://example.com;" in web.policy("example.com")
    for odd in (None, "", "a b", "x;script-src *", "host:9002/path", "évil.example"):
        assert "connect-src 'self';" in web.policy(odd), odd


def test_the_page_fetches_nothing_from_elsewhere() -> None:
    html = web.read("index.html").decode()
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    # no inline script or event-handler attribute: the policy would refuse them
    assert not re.search(r"<script(?![^>]*\ssrc=)", html)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html)


def test_the_scripts_never_write_html() -> None:
    for name in ("app.js", "worklet.js"):
        code = web.read(name).decode()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, (name, sink)
