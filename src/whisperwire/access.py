"""Who may use the server: its API keys, offered in a request, throttled per address.

One check for every route that needs a key (the WebSocket endpoints, `/metrics`, the OpenAI
REST API). Each caller words its own refusal, in its dialect or HTTP shape.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from whisperwire.limits import AuthThrottle


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else "unknown"


def offered_key(conn: HTTPConnection) -> str:
    """The `token` query parameter, or an `Authorization: Bearer` (or Deepgram's `Token`)
    header's credentials."""
    offered = conn.query_params.get("token", "")
    scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
    if not offered and scheme.lower() in ("bearer", "token"):
        offered = credentials.strip()
    return offered


@dataclass(frozen=True)
class Denied:
    """A refused request: `throttled` (too many failures from its address; `message` says
    so) or a missing or wrong key (the caller says how to send one)."""

    throttled: bool
    address: str
    retry_after: float = 0.0

    @property
    def message(self) -> str:
        return f"too many failed attempts from {self.address}; retry in {self.retry_after:.0f} s"


@dataclass
class KeyCheck:
    keys: list[str]
    throttle: AuthThrottle = field(default_factory=AuthThrottle)
    clock: Callable[[], float] = time.monotonic

    def __call__(self, conn: HTTPConnection) -> Denied | None:
        """None when the server needs no key or `conn` offers a valid one; a failure counts
        against the address."""
        if not self.keys:
            return None
        address, now = client_address(conn), self.clock()
        wait = self.throttle.retry_after(address, now)
        if wait > 0:
            return Denied(True, address, wait)
        offered = offered_key(conn).encode()
        if any(hmac.compare_digest(offered, key.encode()) for key in self.keys):
            return None
        self.throttle.failed(address, now)
        return Denied(False, address)
