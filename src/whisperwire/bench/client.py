"""The load generator: real-time WebSocket streams that record every message's arrival.

One asyncio task per stream sends 100 ms frames of 16 kHz s16le PCM on a wall-clock
schedule (frame k at start + k * 0.1 s; a late frame is sent at once, never skipped), then
`{"type":"end"}`; another reads messages until the server's `end` (or the socket closes).
All times are `time.monotonic()` of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisperwire.bench.corpus import SAMPLE_RATE

FRAME_S = 0.1

CONNECT_AHEAD_S = 0.5  # connections open this long before their stream starts
GREETING_WAIT_S = 10.0  # for the server's first message before streaming


@dataclass
class StreamLog:
    name: str
    duration: float  # seconds of audio sent
    frame_s: float = FRAME_S
    opened_at: float | None = None
    sent: list[float] = field(default_factory=list)  # send time of every frame
    end_sent_at: float | None = None
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    text_frames: list[tuple[float, str]] = field(default_factory=list)
    end_at: float | None = None  # arrival of the server's `end` message
    error: str | None = None
    refused: bool = False  # OVERLOADED at connect (admission control): nothing was streamed

    def sent_time(self, t: float) -> float:
        """When the frame that holds audio time `t` was sent."""
        from whisperwire.bench.metrics import frame_index

        return self.sent[frame_index(t, self.frame_s, len(self.sent))]

    @property
    def first_sent_at(self) -> float | None:
        return self.sent[0] if self.sent else None

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == "final"]

    @property
    def text(self) -> str:
        return " ".join(str(m.get("text", "")).strip() for m in self.finals).strip()

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == "error"]

    @property
    def ready(self) -> dict[str, Any] | None:
        for _, m in self.messages:
            if m.get("type") == "state" and m.get("state") == "ready":
                return m
        return None

    @property
    def drain(self) -> float | None:
        if self.end_at is None or self.end_sent_at is None:
            return None
        return self.end_at - self.end_sent_at


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


async def stream_one(
    url: str,
    samples: np.ndarray,
    name: str,
    start_at: float,
    frame_s: float = FRAME_S,
    drain_timeout: float = 120.0,
    on_frame: Callable[[float], None] | None = None,
    connect_late: bool = False,
) -> StreamLog:
    """Stream `samples` in real time from monotonic time `start_at`; never raises. The
    connection opens at once, or with `connect_late` just before `start_at`."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    log = StreamLog(name, len(samples) / SAMPLE_RATE, frame_s)
    frame = int(SAMPLE_RATE * frame_s)
    chunks = [_pcm(samples[i : i + frame]) for i in range(0, len(samples), frame)]
    sep = "&" if "?" in url else "?"
    if connect_late:  # a session that starts later connects when it starts
        await asyncio.sleep(max(0.0, start_at - CONNECT_AHEAD_S - time.monotonic()))
    try:
        async with connect(
            f"{url}{sep}sample_rate={SAMPLE_RATE}&encoding=s16le",
            max_size=None,
            open_timeout=60,
            ping_interval=None,
            close_timeout=5,
        ) as ws:
            log.opened_at = time.monotonic()
            # whisperwire greets with `ready`, or refuses with OVERLOADED; a peer may say nothing.
            with contextlib.suppress(asyncio.TimeoutError):
                raw = await asyncio.wait_for(ws.recv(), GREETING_WAIT_S)
                greeting = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else None
                if isinstance(greeting, dict):
                    log.messages.append((time.monotonic(), greeting))
                    if greeting.get("type") == "error" and greeting.get("code") == "OVERLOADED":
                        log.refused = True
                        return log

            async def receive() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        at = time.monotonic()
                        if isinstance(raw, bytes):
                            continue
                        try:
                            message = json.loads(raw)
                        except json.JSONDecodeError:
                            message = None
                        if not isinstance(message, dict):
                            log.text_frames.append((at, raw))
                            continue
                        log.messages.append((at, message))
                        if message.get("type") == "end":
                            log.end_at = at
                            return

            receiver = asyncio.create_task(receive())
            for k, chunk in enumerate(chunks):
                delay = start_at + k * frame_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(chunk)
                log.sent.append(time.monotonic())
                if on_frame is not None:
                    on_frame(len(chunk) / 2 / SAMPLE_RATE)
            await ws.send(json.dumps({"type": "end"}))
            log.end_sent_at = time.monotonic()
            try:
                await asyncio.wait_for(receiver, drain_timeout)
            except asyncio.TimeoutError:
                log.error = f"no `end` message within {drain_timeout:.0f} s of sending `end`"
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
        log.error = f"{type(exc).__name__}: {exc}"
    return log


async def _stream_many(
    url: str,
    streams: Sequence[tuple[str, np.ndarray]],
    stagger_s: float,
    drain_timeout: float,
    on_frame: Callable[[float], None] | None,
    connect_late: bool,
) -> list[StreamLog]:
    start = time.monotonic() + CONNECT_AHEAD_S  # time to open every connection first
    longest = max(range(len(streams)), key=lambda i: len(streams[i][1]), default=0)
    tasks = [
        stream_one(
            url, samples, name, start + i * stagger_s, FRAME_S, drain_timeout,
            on_frame if i == longest else None, connect_late,
        )
        for i, (name, samples) in enumerate(streams)
    ]  # fmt: skip
    return list(await asyncio.gather(*tasks))


def run_streams(
    url: str,
    streams: Sequence[tuple[str, np.ndarray]],
    stagger_s: float = 0.0,
    drain_timeout: float = 120.0,
    on_frame: Callable[[float], None] | None = None,
    connect_late: bool = False,
) -> list[StreamLog]:
    """Run the streams concurrently (stream i starts `i * stagger_s` after stream 0). Every
    connection opens at the start, or with `connect_late` just before its stream starts (a
    stagger of minutes: connections idle until then would count as live streams).

    `on_frame(seconds)` follows the longest stream only: progress in wall-clock time."""
    return asyncio.run(_stream_many(url, streams, stagger_s, drain_timeout, on_frame, connect_late))
