"""`whisperwire transcribe`: send audio files to a server, as clips or as live PCM streams.

Each file gets its own connection. As a clip, the file's bytes go in one `audio` message and
the `transcription` is printed; with `stream=True` the file is decoded here and sent as 16 kHz
f32le PCM (at real-time pace with `realtime=True`), partials are shown in place on a terminal
and finals printed as lines.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

FRAME_S = 0.1  # seconds of audio per binary frame when streaming


class UsageError(Exception):
    """Bad arguments or an unusable input file: exit status 2."""


class ClientError(Exception):
    """The server cannot be reached: exit status 1."""


@dataclass
class Options:
    url: str = "ws://localhost:9002/"
    stream: bool = False
    realtime: bool = False
    language: str | None = None
    json: bool = False
    cafile: str | None = None
    insecure: bool = False


def ssl_context(url: str, cafile: str | None, insecure: bool) -> ssl.SSLContext | None:
    scheme = urlsplit(url).scheme
    if scheme not in ("ws", "wss"):
        raise UsageError(f"--url: {url!r} is not a ws:// or wss:// URL")
    if scheme == "ws":
        if cafile or insecure:
            raise UsageError("--cafile and --insecure need a wss:// URL")
        return None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--cafile: cannot load {cafile}: {exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Printer:
    """Partials in place on a terminal (nothing otherwise), finals and texts as lines."""

    def __init__(self, out: IO[str], err: IO[str], raw_json: bool) -> None:
        self.out = out
        self.err = err
        self.raw_json = raw_json
        self.tty = out.isatty()
        self.err_tty = err.isatty()
        self._pending = False  # a partial is on screen

    def message(self, raw: str) -> None:
        if self.raw_json:
            print(raw, file=self.out, flush=True)

    def partial(self, text: str) -> None:
        if self.raw_json or not self.tty:
            return
        width = max(10, shutil.get_terminal_size().columns - 1)
        self.out.write("\r\x1b[K" + text.strip()[-width:])
        self.out.flush()
        self._pending = True

    def line(self, text: str) -> None:
        if self.raw_json:
            return
        if self._pending:
            self.out.write("\r\x1b[K")
            self._pending = False
        print(text.strip(), file=self.out, flush=True)

    def progress(self, name: str, fraction: float) -> None:
        if not self.raw_json and self.err_tty:
            self.err.write(f"\r\x1b[K{name}: {fraction:4.0%}")
            self.err.flush()

    def done_progress(self) -> None:
        if not self.raw_json and self.err_tty:
            self.err.write("\r\x1b[K")
            self.err.flush()

    def error(self, text: str) -> None:
        if self._pending:
            self.out.write("\n")
            self._pending = False
        self.done_progress()
        print(f"whisperwire transcribe: {text}", file=self.err, flush=True)


def _connect(url: str, context: ssl.SSLContext | None) -> Any:
    from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidURI
    from websockets.sync.client import connect

    try:
        # No keepalive pings from this side (the server pings): a stream sent faster than the
        # server transcribes is slowed by the server not reading (--max-backlog), so a ping
        # waits behind the audio sent before it. With a round trip longer than the interval,
        # websockets' keepalive pings back to back (924,041 pings in 3 min on the 13.3-min
        # file, then the connection was lost); with a timeout, it would close a healthy stream.
        return connect(
            url, ssl=context, max_size=None, open_timeout=30, close_timeout=5, ping_interval=None
        )
    except InvalidURI as exc:
        raise UsageError(f"--url: {exc}") from None
    except (OSError, TimeoutError, InvalidHandshake, ssl.SSLError, EOFError) as exc:
        hint = ""
        if isinstance(exc, InvalidMessage) and url.startswith("ws://"):
            hint = " (if the server uses TLS, connect to wss://)"
        raise ClientError(f"cannot connect to {url}: {exc or type(exc).__name__}{hint}") from None


def _closed_reason(exc: Any) -> str:
    close = exc.rcvd or exc.sent
    if close is None:
        return "the connection was lost"
    return f"the server closed the connection ({close.code} {close.reason or 'no reason'})"


def _json(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return message if isinstance(message, dict) else {}


def send_clip(path: Path, data: bytes, options: Options, printer: Printer) -> bool:
    """One file as one `audio` message; prints its transcription, or the error (False)."""
    from websockets.exceptions import ConnectionClosed

    audio_id = str(path)
    message: dict[str, Any] = {
        "type": "audio",
        "audio_id": audio_id,
        "format": "base64",
        "audio_data": base64.b64encode(data).decode("ascii"),
    }
    if options.language:
        message["language"] = options.language
    context = ssl_context(options.url, options.cafile, options.insecure)
    failure: str | None = None
    with _connect(options.url, context) as ws:
        try:
            greeting_raw = ws.recv(timeout=30)
            printer.message(str(greeting_raw))
            greeting = _json(greeting_raw)
            if greeting.get("type") == "error":  # refused: no key, or no room
                failure = f"{greeting.get('code')}: {greeting.get('message')}"
                printer.error(f"{path}: {failure}")
                return False
            text = json.dumps(message)
            limit = greeting.get("config", {}).get("max_message_bytes")
            if isinstance(limit, int) and len(text) > limit:  # base64 and JSON: ASCII
                failure = (
                    f"MESSAGE_TOO_BIG: the file is {len(text) / 2**20:.1f} MiB as a message; "
                    f"the server takes up to {limit / 2**20:.1f} MiB (its --max-message-mb): "
                    "send it with --stream, or split it"
                )
                printer.error(f"{path}: {failure}")
                return False
            ws.send(text)
            for raw in ws:
                printer.message(str(raw))
                event = _json(raw)
                kind = event.get("type")
                if kind == "error":
                    failure = f"{event.get('code')}: {event.get('message')}"
                    printer.error(f"{path}: {failure}")
                    if event.get("audio_id") != audio_id:
                        break  # rejected before it was accepted: no `ready` follows
                elif kind == "state" and event.get("audio_id") == audio_id:
                    if event.get("state") == "ready":
                        break
                    printer.progress(path.name, float(event.get("progress") or 0.0))
                elif kind == "transcription" and event.get("audio_id") == audio_id:
                    printer.done_progress()
                    printer.line(str(event.get("transcription", "")))
            else:
                failure = "the server closed the connection before answering"
                printer.error(f"{path}: {failure}")
        except TimeoutError:
            failure = "the server sent no greeting within 30 s"
            printer.error(f"{path}: {failure}")
        except ConnectionClosed as exc:
            failure = _closed_reason(exc)
            printer.error(f"{path}: {failure}")
    printer.done_progress()
    return failure is None


def stream_file(path: Path, samples: Any, options: Options, printer: Printer) -> bool:
    """Decoded audio as f32le PCM frames, then `end`; prints partials and finals, and errors
    (then returns False)."""
    from websockets.exceptions import ConnectionClosed

    query = {"encoding": "f32le", "sample_rate": 16000}
    if options.language:
        query["language"] = options.language
    url = options.url + ("&" if "?" in options.url else "?") + urlencode(query)
    context = ssl_context(options.url, options.cafile, options.insecure)
    frame = int(16000 * FRAME_S)
    ok = True
    ended = False

    with _connect(url, context) as ws:

        def send_all() -> None:
            started = time.monotonic()
            try:
                for i, start in enumerate(range(0, len(samples), frame)):
                    if options.realtime:
                        time.sleep(max(0.0, started + i * FRAME_S - time.monotonic()))
                    ws.send(samples[start : start + frame].astype("<f4").tobytes())
                ws.send(json.dumps({"type": "end"}))
            except ConnectionClosed:
                pass  # the receiving side reports why

        sender = threading.Thread(target=send_all, name="whisperwire-send", daemon=True)
        sender.start()
        try:
            for raw in ws:
                printer.message(str(raw))
                event = _json(raw)
                kind = event.get("type")
                if kind == "partial":
                    printer.partial(str(event.get("text", "")))
                elif kind == "final":
                    printer.line(str(event.get("text", "")))
                elif kind == "error":
                    # OVERLOADED mid-stream is news, not a failure: the server slows the
                    # sender or decodes again later, and drops nothing.
                    ok = ok and event.get("code") == "OVERLOADED"
                    printer.error(f"{path}: {event.get('code')}: {event.get('message')}")
                elif kind == "end":
                    ended = True
        except ConnectionClosed as exc:
            if not ended:
                ok = False
                printer.error(f"{path}: {_closed_reason(exc)}")
        sender.join(timeout=5)
    if not ended and ok:
        ok = False
        printer.error(f"{path}: the server closed the connection before the end of the stream")
    return ok


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode(path: Path, data: bytes) -> Any:
    from whisperwire.audio import AudioDecodeError, decode_file

    try:
        return decode_file(data)
    except AudioDecodeError as exc:
        raise UsageError(f"cannot decode {path}: {exc}") from None


def transcribe(
    files: Sequence[str], options: Options, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Transcribe every file; returns the exit status (0, 1 on a server error, 2 on usage)."""
    out = out or sys.stdout
    err = err or sys.stderr
    printer = Printer(out, err, options.json)
    try:
        ssl_context(options.url, options.cafile, options.insecure)
        inputs = [(Path(name), _read(Path(name))) for name in files]
    except UsageError as exc:
        printer.error(f"error: {exc}")
        return 2
    status = 0
    for path, data in inputs:
        if len(inputs) > 1 and not options.json:
            printer.line(f"==> {path} <==")
        try:
            if options.stream:
                ok = stream_file(path, _decode(path, data), options, printer)
            else:
                ok = send_clip(path, data, options, printer)
        except UsageError as exc:
            printer.error(f"error: {exc}")
            return 2
        except ClientError as exc:
            printer.error(f"error: {exc}")
            ok = False
        if not ok:
            status = 1
    return status
