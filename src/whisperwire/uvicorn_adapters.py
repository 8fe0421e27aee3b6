"""uvicorn, adapted: bounded handshakes, droppable WebSocket transports, refused frames
that linger for their close frame, log lines without secrets or client tracebacks, and a
graceful stop that lets sessions finalise first."""

from __future__ import annotations

import asyncio
import logging
import re
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

if TYPE_CHECKING:
    from whisperwire.server_state import App

log = logging.getLogger("whisperwire.server")

Peer = tuple[str, int]  # a client's address and port
LINGER_S = 2.0  # after a refused frame, the client's data is read and dropped this long


SECRET_PARAMETER = re.compile(r"(?i)\b(token|api_key|key)=[^&\s\"']+")


class RedactSecrets(logging.Filter):
    """Keys given as query parameters (`?token=...`) never reach a log line: uvicorn logs
    every WebSocket path and HTTP request line with its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRET_PARAMETER.sub(r"\1=***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class NoClientTracebacks(logging.Filter):
    """A client's invalid UTF-8 text frame is its error, answered with close 1007 by uvicorn,
    which logs it with a traceback: keep the line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Invalid UTF-8 sequence"):
            record.exc_info, record.exc_text = None, None
        return True


def http_protocol(handshake_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, with a bound on how long a new connection may take to send
    its request: uvicorn waits for it without limit, so sockets that connect and send
    nothing (or dribble their headers) would pile up until the process runs out of file
    descriptors. Always h11 (uvicorn's "auto" takes httptools wherever it is installed, as
    Ray Serve's extra installs it): the server behaves the same in every install."""

    class HandshakeTimeout(H11Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._handshake_timer = (
                self.loop.call_later(handshake_timeout_s, self._handshake_expired)
                if handshake_timeout_s > 0
                else None
            )

        def _handshake_expired(self) -> None:
            transport = self.transport
            # No request yet, and not upgraded (a WebSocket's transport has another protocol).
            waiting = self.cycle is None and transport.get_protocol() is self
            if waiting and not transport.is_closing():
                log.debug("no request within %g s from %s", handshake_timeout_s, self.client)
                transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            super().connection_lost(exc)

    return HandshakeTimeout


def websocket_protocol(transports: dict[Peer, asyncio.Transport]) -> type[asyncio.Protocol]:
    """uvicorn's WebSocket protocol, keeping each connection's transport by peer address, so
    a session can drop a client that stops reading: ASGI can only close, and a close frame
    would wait behind everything that client has not read."""

    class Registered(WebSocketsSansIOProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if self.client is not None:
                transports[self.client] = self.transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client is not None and transports.get(self.client) is self.transport:
                del transports[self.client]
            super().connection_lost(exc)

        def handle_parser_exception(self) -> None:
            """A frame the server refuses (over the size limit, malformed): the close frame
            (1009, 1002, ...) is sent, then what the client is still sending is read and
            dropped for LINGER_S before the socket closes. Closing at once, with its data
            unread, would reset the connection, and the client would lose the close frame
            that says why."""
            close = self.conn.close_sent
            code, reason = (close.code, close.reason) if close is not None else (1002, "")
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self._lingering = True  # uvicorn leaves a transport with a close timer open when
            self.close_timer = self.loop.call_later(LINGER_S, self.transport.close)  # the app ends

        def data_received(self, data: bytes) -> None:
            if not getattr(self, "_lingering", False):
                super().data_received(data)
            elif self.conn.parser_exc is None and self.conn.close_rcvd is None:
                self.conn.receive_data(data)  # after a refused message (1007): frames are
                self.conn.events_received()  # dropped, and the client's close ends the wait
                if self.conn.close_rcvd is not None or self.conn.parser_exc is not None:
                    self.transport.close()

    return Registered


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT, sessions first finalise the audio they hold (their finals reach
    the client and the forwarder), then uvicorn closes the connections and stops."""

    def __init__(self, config: uvicorn.Config, state: App) -> None:
        super().__init__(config)
        self.state = state
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.should_exit:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        self._draining = True
        loop = asyncio.get_event_loop()

        async def drain_then_exit() -> None:
            try:
                await self.state.drain(timeout=10.0)
            finally:
                self.should_exit = True

        loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_exit()))
