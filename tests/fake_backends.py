"""Small real HTTP backends for forwarding tests (stdlib http.server in a thread).

``FakeBackend`` records every request and answers through a handler function, optionally
preceded by a script of canned replies (e.g. ``503`` then whatever the handler says).
``llama_handler`` and ``openai_handler`` validate the request shapes of llama.cpp's
``POST /completion`` and OpenAI's ``POST /v1/chat/completions`` and answer like them.

Usable from e2e tests too: ``sys.path`` gets ``tests/unit`` under pytest's default
"prepend" import mode for tests in this directory; elsewhere add it explicitly.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float  # time.monotonic()

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RecordedRequest], Reply]


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return Reply(status, json.dumps(obj).encode("utf-8"), h)


def text_reply(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    h = {"Content-Type": "text/plain; charset=utf-8"}
    h.update(headers or {})
    return Reply(status, text.encode("utf-8"), h)


def ok_handler(req: RecordedRequest) -> Reply:
    return json_reply({"ok": True, "received": len(req.body)})


def _json_body(req: RecordedRequest) -> tuple[Any, Reply | None]:
    if not req.headers.get("content-type", "").startswith("application/json"):
        return None, json_reply({"error": "content-type must be application/json"}, 415)
    try:
        return req.json(), None
    except ValueError:
        return None, json_reply({"error": "body is not JSON"}, 400)


def llama_handler(req: RecordedRequest) -> Reply:
    """llama.cpp server ``POST /completion`` (non-streaming)."""
    if req.method != "POST" or req.path != "/completion":
        return json_reply({"error": "not found"}, 404)
    body, err = _json_body(req)
    if err is not None:
        return err
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("prompt"), str)
        or not isinstance(body.get("n_predict"), int)
        or body.get("stream") is not False
    ):
        return json_reply({"error": {"code": 400, "message": "bad /completion request"}}, 400)
    return json_reply(
        {
            "content": f"LLAMA[{body['n_predict']}]:{body['prompt']}",
            "stop": True,
            "model": "fake.gguf",
            "tokens_predicted": 3,
        }
    )


def openai_handler(req: RecordedRequest) -> Reply:
    """OpenAI-compatible ``POST /v1/chat/completions`` (non-streaming)."""
    if req.method != "POST" or req.path != "/v1/chat/completions":
        return json_reply({"error": {"message": "not found"}}, 404)
    body, err = _json_body(req)
    if err is not None:
        return err
    messages = body.get("messages") if isinstance(body, dict) else None
    valid = (
        isinstance(body, dict)
        and isinstance(body.get("model"), str)
        and isinstance(messages, list)
        and len(messages) > 0
        and all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str)
            for m in messages
        )
        and messages[-1]["role"] == "user"
        and body.get("stream", False) is False
    )
    if not valid:
        return json_reply({"error": {"message": "bad chat completion request"}}, 400)
    return json_reply(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": f"OPENAI[{body['model']}]:{messages[-1]['content']}",
                    },
                    "finish_reason": "stop",
                }
            ],
        }
    )


def free_port() -> int:
    """A port that was free a moment ago (for a backend started later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    backend: FakeBackend


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real backends
    timeout = 10
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.backend._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.backend._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        reply = self.server.backend._record_and_reply(req)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_POST = _handle
    do_GET = _handle
    do_PUT = _handle


class FakeBackend:
    """A recording HTTP server on 127.0.0.1; ``with FakeBackend(...) as b: b.url(...)``."""

    def __init__(self, handler: Handler = ok_handler, port: int = 0) -> None:
        self.handler = handler
        self.port = port
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._script: deque[Reply | Callable[[RecordedRequest], Reply]] = deque()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- control
    def start(self) -> FakeBackend:
        server = _Server(("127.0.0.1", self.port), _RequestHandler)
        server.backend = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # end keep-alive connections: the backend is really gone
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: Reply | Callable[[RecordedRequest], Reply]) -> None:
        """Answer the next requests with these replies, then fall back to the handler."""
        with self._lock:
            self._script.extend(replies)

    # -- inspection
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} requests within {timeout}s, got {len(self._requests)}"
                    )
                self._cond.wait(remaining)
            return list(self._requests)

    # -- internals
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _record_and_reply(self, req: RecordedRequest) -> Reply:
        with self._cond:  # record on receipt, before a (possibly slow) handler runs
            self._requests.append(req)
            self._cond.notify_all()
            scripted = self._script.popleft() if self._script else None
        if scripted is None:
            return self.handler(req)
        if isinstance(scripted, Reply):
            return scripted
        return scripted(req)
