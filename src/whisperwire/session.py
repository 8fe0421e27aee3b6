"""One connection's glue: codec <-> audio <-> VAD <-> policy <-> scheduler <-> client.

The session owns no decoding rules (those live in `policy`) and parses nothing (that is
`protocol`). It moves data between them, off the event loop wherever work is heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisperwire import protocol as proto
from whisperwire.audio import SAMPLE_RATE, StreamResampler, pcm_to_float32
from whisperwire.clips import ClipQueue
from whisperwire.engine import Engine
from whisperwire.forward import Forwarder
from whisperwire.policy import (
    DecodeRequest,
    Ended,
    Event,
    Final,
    Flushed,
    Hypothesis,
    Partial,
    Policy,
    PolicyConfig,
)
from whisperwire.scheduler import Overloaded, Scheduler
from whisperwire.vad import StreamingVad

log = logging.getLogger("whisperwire.session")

SendText = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]


@dataclass
class Services:
    """What every session shares: the model, the scheduler and the server's defaults."""

    engine: Engine
    scheduler: Scheduler
    policy_config: PolicyConfig
    default_language: str
    default_task: str
    max_message_bytes: int
    forwarder: Forwarder | None = None
    forward_wait_s: float = 30.0  # on `end`, how long the backend's reply may take


class AudioPipeline:
    """PCM bytes -> 16 kHz float32 + VAD probabilities. Runs in a worker thread."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        self.encoding = encoding
        self.resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self.vad = StreamingVad()

    def process(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        samples = self.resampler.process(pcm_to_float32(data, self.encoding))
        return samples, self.vad.process(samples)

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """The resampler's last samples at end of stream (not scored: the region is forced)."""
        return self.resampler.process(np.zeros(0, dtype=np.float32), last=True), np.zeros(0)


def _round(x: float) -> float:
    return round(float(x), 3)


def event_message(event: Event) -> dict[str, Any]:
    if isinstance(event, Partial):
        return {
            "type": "partial",
            "segment_id": event.segment_id,
            "text": event.text,
            "stable": event.stable,
            "start": _round(event.start),
            "end": _round(event.end),
        }
    if isinstance(event, Final):
        return {
            "type": "final",
            "segment_id": event.segment_id,
            "text": event.text,
            "start": _round(event.start),
            "end": _round(event.end),
            "language": event.language,
            "words": [
                {
                    "word": w.text,
                    "start": _round(w.start),
                    "end": _round(w.end),
                    "probability": _round(w.probability),
                }
                for w in event.words
            ],
        }
    if isinstance(event, Flushed):
        return {"type": "state", "state": "flushed"}
    assert isinstance(event, Ended)
    return {"type": "end", "duration": _round(event.duration), "segments": event.segments}


class Session:
    def __init__(
        self,
        services: Services,
        send_text: SendText,
        close: Close,
        query: dict[str, str] | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.services = services
        self._send_text = send_text
        self._close = close
        self._send_lock = asyncio.Lock()
        config = proto.StreamConfig(language=services.default_language, task=services.default_task)
        self.codec = proto.Codec(
            config=config,
            languages=services.engine.languages,
            max_message_bytes=services.max_message_bytes,
        )
        self._query = query or {}
        self.policy = Policy(services.policy_config)
        self._pipeline: AudioPipeline | None = None
        self._clips: ClipQueue | None = None  # made on the session's first `audio` message
        self._decoding: asyncio.Task[None] | None = None
        self._closed = False
        self._close_code = (1000, "end of stream")
        self._ended = asyncio.Event()  # the `end` message went out

    # ---- lifecycle

    async def open(self) -> None:
        """Apply query parameters and greet; a bad parameter is an error, not a refusal."""
        try:
            self.codec.apply_query(self._query)
        except proto.ProtocolError as exc:
            await self.send_error(exc.code, f"query parameters: {exc.message}")
        self._sync_options()
        if self.services.forwarder is not None:
            self.services.forwarder.attach(self.id, self.send)
        engine = self.services.engine
        await self.send(
            {
                "type": "state",
                "state": "ready",
                "session_id": self.id,
                "message": "ready: send PCM as binary frames, or JSON messages",
                "config": {
                    **self.codec.config.model_dump(),
                    "model": engine.name,
                    "languages": "all" if engine.multilingual else sorted(engine.languages),
                },
            }
        )

    async def closed(self) -> None:
        """The connection is gone: stop work nobody will read."""
        self._closed = True
        if self._decoding is not None:
            self._decoding.cancel()
        if self.services.forwarder is not None:
            await self.services.forwarder.end_session(self.id)

    async def shutdown(self, timeout: float) -> None:
        """The server is stopping: finalise the audio received, as on `end`, then close."""
        self._close_code = (1001, "server shutting down")
        await self._end()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)

    # ---- inbound

    async def receive_bytes(self, data: bytes) -> None:
        try:
            frame = self.codec.receive_binary(data)
        except proto.ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
            return
        if self.policy.finished:
            await self.send_error(proto.INVALID_MESSAGE, "audio after 'end' is ignored")
            return
        if self._pipeline is None:
            self._pipeline = AudioPipeline(frame.encoding, frame.sample_rate)
        samples, probs = await asyncio.to_thread(self._pipeline.process, frame.data)
        self.policy.feed(samples, probs)
        await self._pump()

    async def receive_text(self, text: str) -> None:
        try:
            message = self.codec.receive_text(text)
        except proto.ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
            if exc.clip is not None:  # a refused clip: its client is not left waiting
                await self.send({"type": "state", "state": "ready", "audio_id": exc.clip or None})
            return
        if isinstance(message, proto.Ping):
            await self.send({"type": "state", "state": "pong", "message": "pong"})
        elif isinstance(message, proto.Status):
            await self.send(self.status())
        elif isinstance(message, proto.Config):
            self._sync_options()
            await self.send(
                {"type": "state", "state": "configured", "config": self.codec.config.model_dump()}
            )
        elif isinstance(message, proto.Flush):
            if not self.policy.finished:
                self.policy.flush()
                await self._pump()
        elif isinstance(message, proto.End):
            await self._end()
        elif isinstance(message, proto.ClipAudio):
            await self._clip_queue().submit(message, self.codec.config)

    async def _end(self) -> None:
        if self.policy.finished:
            return
        if self._pipeline is not None:
            samples, probs = await asyncio.to_thread(self._pipeline.drain)
            if len(samples):
                self.policy.feed(samples, probs)
        self.policy.finish()
        await self._pump()

    def _sync_options(self) -> None:
        config = self.codec.config
        self.policy.set_options(None if config.language == "auto" else config.language, config.task)

    def status(self) -> dict[str, Any]:
        clips = self._clips.status() if self._clips is not None else {}
        return {
            "type": "state",
            "state": "processing" if self.policy.busy or clips else "ready",
            "session_id": self.id,
            "duration": _round(self.policy.duration),
            "queued_jobs": self.services.scheduler.pending,
            **clips,
        }

    # ---- decoding

    async def _pump(self) -> None:
        """Send what the policy has to say and start its next decode if it wants one."""
        await self._send_events()
        if self._decoding is None or self._decoding.done():
            request = self.policy.next_request()
            if request is not None:
                self._decoding = asyncio.create_task(self._decode(request))
            else:
                await self._send_events()

    async def _decode(self, request: DecodeRequest) -> None:
        engine = self.services.engine
        try:
            hypothesis = await self.services.scheduler.run(self.id, lambda: engine.decode(request))
        except asyncio.CancelledError:
            raise
        except Overloaded as exc:
            await self.send_error(proto.OVERLOADED, f"decode skipped: {exc}")
            hypothesis = Hypothesis([], None)
        except Exception as exc:  # noqa: BLE001 - the client must hear about it
            log.exception("session %s: decode failed", self.id)
            await self.send_error(proto.TRANSCRIPTION_ERROR, f"decoding failed: {exc}")
            hypothesis = Hypothesis([], None)
        self.policy.apply(request, hypothesis)
        self._decoding = None
        await self._pump()

    async def _send_events(self) -> None:
        forwarder = self.services.forwarder
        for event in self.policy.events():
            if isinstance(event, Partial) and not self.codec.config.partials:
                continue
            if forwarder is not None:
                if isinstance(event, Final):
                    segment = {k: v for k, v in event_message(event).items() if k != "words"}
                    await forwarder.add_final(self.id, segment)
                elif isinstance(event, Flushed):
                    await forwarder.flush(self.id)
                elif isinstance(event, Ended):
                    await forwarder.end_session(self.id, wait_s=self.services.forward_wait_s)
            if isinstance(event, Ended) and self._clips is not None:
                await self._clips.drain()  # clips sent before `end` are answered first
            await self.send(event_message(event))
            if isinstance(event, Ended):
                await self._close(*self._close_code)
                self._closed = True
                self._ended.set()

    # ---- outbound

    async def send(self, message: dict[str, Any]) -> None:
        frame = self.codec.encode(message)
        if frame is None or self._closed:
            return
        async with self._send_lock:
            try:
                await self._send_text(frame)
            except Exception:  # noqa: BLE001 - the peer went away; the receive loop notices
                self._closed = True

    async def send_error(self, code: str, message: str) -> None:
        await self.send(proto.error_event(code, message))

    # ---- whole clips

    def _clip_queue(self) -> ClipQueue:
        if self._clips is None:
            services = self.services
            self._clips = ClipQueue(
                self.id, services.engine, services.scheduler, self.send, lambda: self._closed
            )
        return self._clips
