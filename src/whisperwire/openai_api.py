"""OpenAI's audio REST API on the server's port: `POST /v1/audio/transcriptions`,
`POST /v1/audio/translations` and `GET /v1/models`, for the official clients.

An upload is decoded as a whole clip is (PyAV, within --max-clip-seconds and the memory
budget) and transcribed by `clips.ClipDecode`: one window per scheduler turn under a fairness
key of its own, so a long upload never stalls a live stream's partials. The body is bounded by
--max-message-mb while it arrives; with --api-key, every route needs a key (Bearer), checked
and throttled as a WebSocket client's is. Parameters and answers: `openai_formats`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from whisperwire import protocol as proto
from whisperwire.access import KeyCheck
from whisperwire.audio import SAMPLE_RATE
from whisperwire.clips import ClipDecode, ClipError, decode_clip, load_within
from whisperwire.openai_formats import (
    MEDIA_TYPES,
    AudioRequest,
    Deltas,
    OpenAIError,
    Transcript,
    bad,
    event,
    from_whisper,
    parse_request,
    render,
)
from whisperwire.scheduler import Overloaded

if TYPE_CHECKING:
    from whisperwire.server_state import App

log = logging.getLogger("whisperwire.openai_api")

FRAMES_PER_SECOND = 100  # a segment's `seek` counts Whisper's mel frames


def decode_upload(data: bytes, max_seconds: float) -> np.ndarray:
    """An uploaded file -> 16 kHz mono float32, or a ClipError. Blocking: run it in a thread."""
    if not data:
        raise ClipError(proto.AUDIO_DECODE_ERROR, "the file is empty")
    return decode_clip(data, max_seconds)


CLIP_ERRORS = {  # a ClipError's code -> the HTTP status answered
    proto.AUDIO_DECODE_ERROR: 400,
    proto.MESSAGE_TOO_BIG: 413,
    proto.OVERLOADED: 503,
}


class OpenAIRoutes:
    def __init__(self, state: App, key_check: KeyCheck) -> None:
        self.state = state
        self.key_check = key_check
        self.running = 0  # uploads being decoded or transcribed now

    # ---- guards

    def check_key(self, request: Request) -> None:
        denied = self.key_check(request)
        if denied is not None and denied.throttled:
            code, retry = "rate_limit_exceeded", denied.retry_after
            raise OpenAIError(429, denied.message, code=code, retry_after=retry)
        if denied is not None:
            raise OpenAIError(
                401,
                "this server needs its API key: send the header 'Authorization: Bearer KEY' "
                "(the OpenAI client's api_key)",
                code="invalid_api_key",
            )

    def check_room(self) -> None:
        state = self.state
        if state.stopping:
            raise OpenAIError(503, "the server is shutting down; retry in a moment", retry_after=5)
        if state.memory.over():
            raise OpenAIError(
                503,
                "the server is at its memory budget (--max-memory-mb); retry later",
                code="overloaded",
                retry_after=10,
            )
        limit = state.settings.max_sessions
        if self.running >= limit:
            raise OpenAIError(
                429,
                f"{self.running} uploads are being transcribed, the server's limit (its "
                "--max-sessions); retry later",
                code="rate_limit_exceeded",
                retry_after=5,
            )

    # ---- the request

    async def form(self, request: Request) -> tuple[dict[str, list[str]], UploadFile | None]:
        """The multipart form's text fields and its file, the body bounded as it arrives."""
        limit = self.state.settings.max_message_bytes
        too_big = OpenAIError(
            413,
            f"the request exceeds the server's limit of {limit} bytes (its --max-message-mb); "
            "send a compressed file (Opus, MP3) or a shorter one",
            param="file",
            code="request_too_large",
        )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + 64 * 1024:  # the form's own fields
            raise too_big
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad("file", "send the audio as multipart/form-data with a 'file' part")

        async def bounded() -> AsyncIterator[bytes]:
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit + 64 * 1024:
                    raise too_big
                yield chunk

        parser = MultiPartParser(request.headers, bounded(), max_files=1, max_fields=32)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise bad("file", f"the multipart form cannot be read: {exc}") from None
        fields: dict[str, list[str]] = {}
        upload: UploadFile | None = None
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(name, []).append(value)
            elif name == "file":
                upload = value
            else:
                raise bad(name, "only 'file' may be a file")
        return fields, upload

    async def audio(self, request: Request, task: Literal["transcribe", "translate"]) -> Response:
        try:
            self.check_key(request)
            self.check_room()
            fields, upload = await self.form(request)
            try:
                engine = self.state.engine
                query = parse_request(task, fields, engine.languages)
                if upload is None:
                    raise bad(
                        "file", "missing; send the audio file as the form's 'file' part", "missing"
                    )
                data = await upload.read()
            finally:
                if upload is not None:
                    await upload.close()
            self.check_room()  # the upload took a while
            self.running += 1
            try:
                samples = await self._load(data, request)
                key = f"api-{uuid.uuid4().hex[:12]}"
                if query.stream:
                    return self._streamed(query, samples, key)
                transcript = await self._transcribe(query, samples, key, request)
            finally:
                self.running -= 1  # a stream counts itself while it runs
            if transcript is None:  # the client left
                return Response(status_code=499)
            headers = {"openai-model": engine.name}
            body = render(transcript, query)
            return Response(body, media_type=MEDIA_TYPES[query.response_format], headers=headers)
        except OpenAIError as exc:
            return self.error(exc)

    def error(self, exc: OpenAIError) -> JSONResponse:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(exc.body(), exc.status, headers=headers)

    async def _load(self, data: bytes, request: Request) -> np.ndarray:
        settings = self.state.settings
        peer = request.client.host if request.client is not None else "unknown"
        what = f"an upload from {peer}"
        try:
            return await load_within(
                functools.partial(decode_upload, data), settings.max_clip_s, self.state.memory, what
            )
        except ClipError as exc:
            raise clip_error(exc) from None

    async def _segments(
        self, query: AudioRequest, samples: np.ndarray, key: str
    ) -> AsyncIterator[tuple[ClipDecode, Any]]:
        """(the decode, a Segment of the clip) in order; the load monitor counts the clip."""
        decode = ClipDecode(self.state.engine, self.state.scheduler, key)
        options = {
            "prompt": query.prompt,
            "temperature": query.temperature,
            "word_timestamps": query.words,
        }
        monitor = self.state.load
        monitor.clip_started()
        steps = decode.segments(samples, query.language, query.task, **options)
        try:
            async with contextlib.aclosing(steps):
                index = 0
                async for offset, segment in steps:
                    seek = round(offset * FRAMES_PER_SECOND)
                    yield decode, from_whisper(index, segment, offset, seek)
                    index += 1
        except Overloaded as exc:
            raise OpenAIError(
                503, f"not transcribed: {exc}; retry later", code="overloaded", retry_after=5
            ) from None
        finally:
            monitor.clip_finished()

    def _transcript(
        self, query: AudioRequest, samples: np.ndarray, language: str | None, segments: list[Any]
    ) -> Transcript:
        heard = None if language in (None, "auto") else language
        return Transcript(query.task, heard, len(samples) / SAMPLE_RATE, tuple(segments))

    async def _transcribe(
        self, query: AudioRequest, samples: np.ndarray, key: str, request: Request
    ) -> Transcript | None:
        segments = []
        language = query.language
        steps = self._segments(query, samples, key)
        async with contextlib.aclosing(steps):  # a return ends the decode at once
            async for decode, segment in steps:
                segments.append(segment)
                language = decode.language
                if await request.is_disconnected():
                    return None
        if not segments:
            language = None
        return self._transcript(query, samples, language, segments)

    def _streamed(self, query: AudioRequest, samples: np.ndarray, key: str) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            deltas, segments = Deltas(), []
            self.running += 1
            try:
                steps = self._segments(query, samples, key)
                async with contextlib.aclosing(steps):  # the client leaving ends the decode
                    async for _, segment in steps:
                        segments.append(segment)
                        if (chunk := deltas.delta(segment.text)) is not None:
                            yield chunk
                yield deltas.done(self._transcript(query, samples, None, segments))
            except OpenAIError as exc:
                yield event(exc.body())
            except Exception as exc:  # noqa: BLE001 - the model failed; the client must hear it
                yield event(internal(exc).body())
            finally:
                self.running -= 1

        headers = {"openai-model": self.state.engine.name, "Cache-Control": "no-cache"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def models(self, request: Request) -> Response:
        try:
            self.check_key(request)
        except OpenAIError as exc:
            return self.error(exc)
        return JSONResponse({"object": "list", "data": [self.model()]})

    async def model_info(self, request: Request) -> Response:
        try:
            self.check_key(request)
            name = request.path_params["model"]
            if name != self.state.engine.name:
                raise OpenAIError(
                    404,
                    f"this server serves {self.state.engine.name!r}, not {proto.shown(name)}",
                    param="model",
                    code="model_not_found",
                )
        except OpenAIError as exc:
            return self.error(exc)
        return JSONResponse(self.model())

    def model(self) -> dict[str, Any]:
        return {"id": self.state.engine.name, "object": "model", "created": 0, "owned_by": "local"}


def clip_error(exc: ClipError) -> OpenAIError:
    status = CLIP_ERRORS.get(exc.code, 500)
    param = "file" if status in (400, 413) else None
    code = {400: "invalid_file", 413: "audio_too_long", 503: "overloaded"}.get(status)
    return OpenAIError(
        status, exc.message, param=param, code=code, retry_after=10 if status == 503 else None
    )


def internal(exc: Exception) -> OpenAIError:
    ref = proto.incident()
    log.error("an upload's transcription failed [incident %s]", ref, exc_info=exc)
    return OpenAIError(500, f"transcription failed (incident {ref} in the server's log)")


def install(app: FastAPI, state: App, key_check: KeyCheck) -> None:
    """Add the routes to `app`; `key_check`: the server's key check (with its throttle)."""
    routes = OpenAIRoutes(state, key_check)

    async def transcriptions(request: Request) -> Response:
        return await _guarded("transcriptions", routes.audio(request, "transcribe"))

    async def translations(request: Request) -> Response:
        return await _guarded("translations", routes.audio(request, "translate"))

    async def models(request: Request) -> Response:
        return await _guarded("models", routes.models(request))

    async def model_info(request: Request) -> Response:
        return await _guarded("models", routes.model_info(request))

    app.add_api_route("/v1/audio/transcriptions", transcriptions, methods=["POST"])
    app.add_api_route("/v1/audio/translations", translations, methods=["POST"])
    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/models/{model:path}", model_info, methods=["GET"])

    async def http_error(request: Request, exc: Exception) -> Response:
        """FastAPI's own errors (404, 405) under /v1/ in OpenAI's body; elsewhere as they were."""
        if not isinstance(exc, HTTPException) or not request.url.path.startswith("/v1/"):
            return await http_exception_handler(request, exc)  # type: ignore[arg-type]
        where = f"{request.method} {request.url.path}"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return routes.error(OpenAIError(exc.status_code, f"{where}: {exc.detail}", code=code))

    app.add_exception_handler(HTTPException, http_error)

    async def _guarded(route: str, work: Any) -> Response:
        try:
            response = await work
        except Exception as exc:  # noqa: BLE001 - a bug of ours: OpenAI's body, not a traceback
            response = routes.error(internal(exc))
        state.metrics.api_request(route, response.status_code)
        return response
