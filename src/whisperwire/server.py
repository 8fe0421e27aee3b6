"""The ASGI app on uvicorn: the WebSocket endpoint, health, and server start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from whisperwire import openai_api, vad, web
from whisperwire import protocol as proto
from whisperwire.access import KeyCheck, client_address
from whisperwire.engine import Engine
from whisperwire.forward import Forwarder
from whisperwire.journal import Journal, JournalLink
from whisperwire.limits import PerAddress
from whisperwire.metrics import Metrics
from whisperwire.protocol import deepgram, native, openai_realtime
from whisperwire.protocol import events as ev
from whisperwire.server_state import FINALISE_S, App
from whisperwire.session import Session
from whisperwire.settings import Settings
from whisperwire.tls import TLSError, tls_context
from whisperwire.uvicorn_adapters import (
    GracefulServer,
    NoClientTracebacks,
    RedactSecrets,
    http_protocol,
    websocket_protocol,
)

__all__ = ["App", "TLSError", "create_app", "serve", "tls_context"]

log = logging.getLogger("whisperwire.server")

# At --max-sessions, a session whose client has sent nothing for this long (or the idle
# timeout, if shorter) gives its slot to a new client.
QUIET_YIELD_S = 10.0
RESUME_PARAMETERS = ("resume", "last_segment")  # query parameters of a reconnecting client


def speaks_deepgram(ws: WebSocket) -> bool:
    return deepgram.speaks_deepgram(ws.url.path, ws.query_params, ws.headers.get("authorization"))


def create_app(
    settings: Settings,
    engine: Engine,
    forwarder: Forwarder | None = None,
    metrics: Metrics | None = None,
    server: str = "",
    exposition: Callable[[], Awaitable[bytes]] | None = None,
    journal: JournalLink | None = None,
) -> FastAPI:
    """The app; `metrics` is the registry the forwarder reports to, if it was given one;
    `server` names this one among replicas (in `ready` and /health); `exposition`, where
    given, makes the page /metrics serves (every replica's, on Ray) instead of `metrics`;
    `journal`, the board of the replicas' sessions (Ray), where a session whose replica
    died is taken over from."""
    state = App(settings, engine, forwarder, metrics, server, journal)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vad.load()
        if forwarder is not None:
            await forwarder.start()
        yield
        await state.drain(timeout=FINALISE_S)
        if forwarder is not None:
            await forwarder.close(timeout_s=10.0)
        state.scheduler.close()

    # With keys, only /health and the page at GET / (no secrets) answer without one: no docs.
    pages: dict[str, Any] = (
        {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.api_keys else {}
    )
    app = FastAPI(title="whisperwire", lifespan=lifespan, **pages)
    app.state.whisperwire = state

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> JSONResponse:
        """Liveness and readiness: 503 while draining (the model loads before the port opens).
        HEAD as well, for load balancers' checks that send it."""
        body = {
            "status": "draining" if state.stopping else "ok",
            "model": engine.name,
            **({"server": server} if server else {}),
            "sessions": len(state.sessions),
            "queued_jobs": state.scheduler.pending,
            "batching": {
                "max_batch": state.scheduler.max_batch,
                "batches_run": state.scheduler.batches_run,
            },
            "load": state.load.status(),
            "memory": state.memory.status(),
        }
        return JSONResponse(body, 503 if state.stopping else 200)

    async def refuse(
        ws: WebSocket, code: str, message: str, close_code: int, retry_after: float | None = None
    ) -> None:
        """Say why (in the native dialect, whatever the client asked for, but at Deepgram's
        path in its dialect), then close."""
        wait = ev.UNSET if retry_after is None else retry_after
        refusal = ev.Error(code=code, message=message, retry_after=wait)
        realtime = ws.url.path == openai_realtime.PATH
        dialect = openai_realtime if realtime else deepgram if speaks_deepgram(ws) else native
        await ws.send_text(dialect.encode(refusal, state.services.clock) or "")
        state.metrics.error_sent(code)
        await ws.close(close_code, code.lower())

    idle = settings.idle_timeout_s

    longest = settings.max_session_s

    async def next_message(ws: WebSocket, session: Session) -> dict[str, Any] | str:
        """The next ASGI message; or "idle" once the client has sent nothing for `idle`
        seconds while the server had nothing of its session in hand; or "expired" once the
        session is `longest` seconds old."""
        while True:
            now = time.monotonic()
            left = longest - (now - session.opened) if longest else None
            if left is not None and left <= 0:
                return "expired"
            quiet = idle - (now - session.last_heard) if idle else None
            if quiet is not None and quiet <= 0 and not session.in_hand:
                return "idle"
            waits = [w for w in (left, idle if quiet is not None and quiet <= 0 else quiet) if w]
            with contextlib.suppress(asyncio.TimeoutError):
                return await asyncio.wait_for(ws.receive(), min(waits) if waits else None)

    check_key = KeyCheck(settings.api_keys)  # every route's key check, throttled
    openai_api.install(app, state, check_key)  # the OpenAI audio API, behind the same keys
    web.install(app)  # the browser page at GET /, beside the WebSocket at /
    per_address = PerAddress(settings.max_sessions_per_address)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_page(request: Request) -> Response:
        """Prometheus' text format; with --api-key, for a key (unless --metrics-public),
        checked and throttled as a WebSocket client's is."""
        denied = None if settings.metrics_public else check_key(request)
        if denied is not None and denied.throttled:
            headers = {"Retry-After": str(max(1, round(denied.retry_after)))}
            return PlainTextResponse(denied.message + "\n", 429, headers=headers)
        if denied is not None:
            message = (
                "/metrics needs the server's API key: send the header 'Authorization: "
                "Bearer KEY' or ?token=KEY (or start the server with --metrics-public)\n"
            )
            return PlainTextResponse(message, 401, headers={"WWW-Authenticate": "Bearer"})
        if exposition is None:
            return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
        try:
            page = await exposition()
        except Exception as exc:  # noqa: BLE001 - said to the scraper, not hidden
            log.warning("/metrics: the replicas' metrics could not be gathered: %s", exc)
            message = f"the replicas' metrics could not be gathered: {exc}\n"
            return PlainTextResponse(message, 503)
        return Response(page, media_type=CONTENT_TYPE_LATEST)

    origins = frozenset(settings.allowed_origins)

    async def endpoint(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if origins and origin is not None and origin.lower().rstrip("/") not in origins:
            log.info("refused a connection from a page of %s", proto.shown(origin))
            await ws.close(1008)  # before the upgrade: HTTP 403
            return
        await ws.accept()
        address = client_address(ws)
        if state.stopping:
            message = "the server is shutting down; reconnect in a moment"
            await refuse(ws, proto.OVERLOADED, message, 1012, retry_after=5.0)
            return
        denied = check_key(ws)
        if denied is not None and denied.throttled:
            retry = round(denied.retry_after, 1)
            await refuse(ws, proto.UNAUTHORIZED, denied.message, 1008, retry_after=retry)
            return
        if denied is not None:
            message = (
                "this server needs an API key: pass ?token=KEY or the header "
                "'Authorization: Bearer KEY'"
            )
            await refuse(ws, proto.UNAUTHORIZED, message, 1008)
            return
        try:  # a Deepgram or OpenAI Realtime client: a value it cannot have closes
            if ws.url.path == openai_realtime.PATH:
                openai_realtime.query(ws.query_params)
            elif speaks_deepgram(ws):
                deepgram.parse_query(ws.query_params)
        except proto.ProtocolError as exc:
            await refuse(ws, exc.code, f"query parameters: {exc.message}", 1008)
            return
        resume = ws.query_params.get("resume")
        resumed = await state.take_over(resume) if resume else None
        if resumed is not None:  # admitted when it first connected
            await serve_session(ws, resumed)
            return
        # A new session, or one whose replica died (taken over from the board), needs room:
        # refused, the latter's journal stays on the board for a replica that has it.
        full = len(state.sessions) >= settings.max_sessions
        if full and not (idle and state.make_room(min(idle, QUIET_YIELD_S))):
            message = f"the server is at its limit of {settings.max_sessions} sessions; retry later"
            await refuse(ws, proto.OVERLOADED, message, 1013)
            return
        if state.memory.over():
            message = "the server is at its memory budget (--max-memory-mb); retry later"
            await refuse(ws, proto.OVERLOADED, message, 1013, retry_after=10.0)
            return
        if not per_address.admit(address):
            message = (
                f"{address} already has {per_address.limit} sessions open (the server's "
                "--max-sessions-per-address); close one or retry later"
            )
            await refuse(ws, proto.OVERLOADED, message, 1013, retry_after=5.0)
            return
        try:
            load = state.load
            if not load.admit_stream():
                retry = load.retry_after_s()
                message = (
                    f"the server is at its capacity of {load.capacity()} live streams within "
                    f"{load.max_lag_s:.1f} s of lag; retry in {retry:g} s"
                )
                await refuse(ws, proto.OVERLOADED, message, 1013, retry_after=retry)
                return
            journal = state.services.journal
            lost = await journal.claim(resume) if resume and journal is not None else None
            await serve_session(ws, None, resume, lost)
        finally:
            per_address.release(address)

    async def serve_session(
        ws: WebSocket,
        resumed: Session | None,
        resume: str | None = None,
        lost: Journal | None = None,
    ) -> None:
        """Run one connection: a new session (`resumed` None; `resume` the id the client
        asked for, if it could not be resumed), a dropped one taken up again, or the session
        of a replica that died (`lost`, its journal)."""
        load = state.load

        async def close(code: int, reason: str) -> None:
            with contextlib.suppress(Exception):
                await ws.close(code, reason)

        def abort() -> None:
            peer = (ws.client.host, ws.client.port) if ws.client is not None else None
            transport = state.transports.get(peer) if peer is not None else None
            if transport is not None:
                transport.abort()

        if resumed is not None:
            session = resumed
            load.stream_opened(session.id)
            log.info("session %s resumed from %s", session.id, ws.client)
        else:
            query = {k: v for k, v in ws.query_params.items() if k not in RESUME_PARAMETERS}
            if speaks_deepgram(ws):
                query["format"] = "deepgram"
            elif ws.url.path == openai_realtime.PATH:  # its settings come by session.update
                query = {"format": openai_realtime.FORMAT, "intent": "transcription"}
            session = Session(state.services, ws.send_text, close, query, abort, lost)
            state.sessions[session.id] = session
            load.stream_opened(session.id)
            how = "taken over" if lost is not None else "opened"
            log.info("session %s %s from %s", session.id, how, ws.client)
        dropped = False  # the connection went without the client's close frame
        try:
            last = ws.query_params.get("last_segment", "")
            segment = int(last) if last.isdigit() and len(last) < 10 else None
            if resumed is not None:
                await session.attach(ws.send_text, close, abort, segment)
            elif lost is not None:
                await session.open_taken_over(segment)
            else:
                await session.open()
                if resume:
                    await session.send_error(
                        proto.RESUME_FAILED,
                        f"no session {proto.shown(resume)} to resume (it ended, or its "
                        f"--resume-window of {settings.resume_window_s:g} s passed); this is "
                        "a new session",
                    )
            while True:
                await session.room_for_audio()
                message = await next_message(ws, session)
                if message == "idle":  # the client is told, the slot is freed
                    await session.idle_out(
                        f"nothing received for {idle:g} s (the server's --idle-timeout)"
                    )
                    break
                if message == "expired":
                    await session.idle_out(
                        f"the session is {longest:g} s old (the server's --max-session-duration)",
                        proto.SESSION_TIMEOUT,
                    )
                    break
                assert isinstance(message, dict)
                if message["type"] == "websocket.disconnect":
                    # A client that closes with a code (1000, 1001...) has left; without
                    # one (1005, 1006) the connection dropped, and it may come back.
                    dropped = message.get("code") in (1005, 1006)
                    break
                try:
                    if message.get("bytes") is not None:
                        await session.receive_bytes(message["bytes"])
                    elif message.get("text") is not None:
                        await session.receive_text(message["text"])
                except Exception:  # a bug of ours: say so (not how), keep the session
                    ref = proto.incident()
                    log.exception("session %s: unexpected error [incident %s]", session.id, ref)
                    await session.send_error(
                        proto.INTERNAL_ERROR,
                        f"the server failed on that message (incident {ref} in its log)",
                    )
        except (WebSocketDisconnect, RuntimeError):
            dropped = True
        finally:
            if dropped and session.resumable and not session.ending and not state.stopping:
                state.park(session)
            else:
                await state.retire(session)

    app.add_api_websocket_route("/", endpoint)
    app.add_api_websocket_route("/v1/listen", endpoint)
    app.add_api_websocket_route(openai_realtime.PATH, endpoint)  # OpenAI Realtime transcription
    return app


def serve(
    settings: Settings,
    engine: Engine,
    forwarder: Forwarder | None = None,
    metrics: Metrics | None = None,
) -> None:
    app = create_app(settings, engine, forwarder, metrics)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=settings.max_message_bytes + 1024 * 1024,
        ssl_certfile=settings.certfile,
        ssl_keyfile=settings.keyfile,
        timeout_graceful_shutdown=10,
        loop="asyncio",  # not uvloop where it happens to be installed (Ray Serve's extra brings it)
        http=http_protocol(settings.handshake_timeout_s),
        ws=websocket_protocol(app.state.whisperwire.transports),
        # No permessage-deflate: PCM barely compresses, and inflating a small frame into a
        # huge message would run on the event loop, ahead of every session's audio.
        ws_per_message_deflate=False,
        # Pings keep NAT paths open, but a missing pong does not close the connection: the
        # server stops reading a client that sends faster than it transcribes (--max-backlog),
        # and the pong waits behind that audio. A peer that is gone is closed by the idle
        # timeout instead.
        ws_ping_timeout=None,
    )
    for name in ("uvicorn.error", "uvicorn.access"):  # configured by uvicorn.Config above
        logging.getLogger(name).addFilter(RedactSecrets())
        logging.getLogger(name).addFilter(NoClientTracebacks())
    if settings.certfile:
        # uvicorn builds its own context from the files; ours also refuses TLS < 1.2.
        config.load()
        config.ssl = tls_context(settings.certfile, settings.keyfile)
    GracefulServer(config, app.state.whisperwire).run()
