"""The ASGI app on uvicorn: the WebSocket endpoint, health, and server start-up."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from whisperwire import protocol as proto
from whisperwire import vad
from whisperwire.engine import Engine
from whisperwire.scheduler import Scheduler
from whisperwire.session import Services, Session
from whisperwire.settings import Settings

log = logging.getLogger("whisperwire.server")


class App:
    """Server-wide state: the shared services and the live sessions."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.scheduler = Scheduler(workers=1)
        self.services = Services(
            engine=engine,
            scheduler=self.scheduler,
            policy_config=settings.policy,
            default_language="en" if not engine.multilingual else settings.language,
            default_task="translate" if settings.translate else "transcribe",
            max_message_bytes=settings.max_message_bytes,
        )
        self.sessions: dict[str, Session] = {}


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    state = App(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vad.load()
        yield
        state.scheduler.close()

    app = FastAPI(title="whisperwire", lifespan=lifespan)
    app.state.whisperwire = state

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.name,
            "sessions": len(state.sessions),
            "queued_jobs": state.scheduler.pending,
        }

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        if len(state.sessions) >= settings.max_sessions:
            message = f"the server is at its limit of {settings.max_sessions} sessions; retry later"
            await ws.send_text(proto.encode_json(proto.error_event(proto.OVERLOADED, message)))
            await ws.close(1013, "overloaded")
            return

        async def close(code: int, reason: str) -> None:
            with contextlib.suppress(Exception):
                await ws.close(code, reason)

        session = Session(state.services, ws.send_text, close, dict(ws.query_params))
        state.sessions[session.id] = session
        log.info("session %s opened from %s", session.id, ws.client)
        try:
            await session.open()
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await session.receive_bytes(message["bytes"])
                elif message.get("text") is not None:
                    await session.receive_text(message["text"])
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            await session.closed()
            del state.sessions[session.id]
            log.info("session %s closed", session.id)

    app.add_api_websocket_route("/", endpoint)
    app.add_api_websocket_route("/v1/listen", endpoint)
    return app


def serve(settings: Settings, engine: Engine) -> None:
    app = create_app(settings, engine)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=settings.max_message_bytes + 1024 * 1024,
        ssl_certfile=settings.certfile,
        ssl_keyfile=settings.keyfile,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
