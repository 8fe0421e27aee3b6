"""Fuzzing the wire contract: every client message type, field and value class, generated
deterministically, against one server. Every case is answered with documented codes, never
INTERNAL_ERROR; `ping` is answered after each (or the connection closes with the documented
code); the log has no traceback; and a concurrent session streaming JFK keeps its transcript."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from support import (
    REPO,
    Server,
    StreamResult,
    audio_root,
    encode_audio,
    flac_silence,
    load_audio,
    start_server,
    stream,
    transcripts,
    wer,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

DOC = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
DOCUMENTED = frozenset(re.findall(r"^\| `([A-Z0-9_]+)` \|", DOC, re.MULTILINE))
LIMIT = 1024 * 1024  # the server runs with --max-message-mb 1: the size cases stay cheap
BOMB_S, SILENCE_S = 4 * 3600 + 600, 600  # past the 2 h --max-clip-seconds (~35 kB of FLAC)
PING = '{"type": "ping"}'
RESET = json.dumps({"type": "config", "sample_rate": 16000, "encoding": "s16le", "language": "en",
                    "task": "transcribe", "partials": True, "format": "json"})  # fmt: skip
INVALID, BAD_JSON, TOO_BIG = "INVALID_MESSAGE", "INVALID_JSON", "MESSAGE_TOO_BIG"
BAD_B64, NOT_AUDIO = "BASE64_DECODE_ERROR", "AUDIO_DECODE_ERROR"


def kind(raw: str) -> str:
    """A raw JSON value's class: null, bool, int, float, str, container; fatal: unreadable."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return "fatal"
    kinds = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}
    return kinds.get(type(value), "container")


VALUES = [  # (label, JSON text as sent: escapes such as \ud800 stay escapes)
    ("null", "null"), ("true", "true"), ("false", "false"), ("zero", "0"), ("one", "1"),
    ("negative", "-1"), ("16000", "16000"), ("2^63", str(2**63)), ("-2^64", str(-(2**64))),
    ("4300 digits", "9" * 4300), ("4301 digits", "9" * 4301), ("minus zero", "-0.0"),
    ("tiny", "5e-324"), ("16000.0", "16000.0"), ("16000.5", "16000.5"), ("1e308", "1e308"),
    ("1e309", "1e309"), ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"),
    ("5000-digit fraction", "0." + "3" * 5000), ("empty string", '""'), ("spaces", '"  "'),
    ("digits", '"16000"'), ("signed digits", '"+16000"'), ("100k chars", f'"{"a" * 100_000}"'),
    ("100k unicode", json.dumps("é" * 100_000, ensure_ascii=False)),
    ("emoji", json.dumps("🎙️😀👍🏽", ensure_ascii=False)),
    ("RTL", json.dumps("\u202eمرحبا עברית", ensure_ascii=False)),
    ("escaped NUL", '"a\\u0000b"'), ("raw NUL", '"a\x00b"'), ("lone high surrogate", '"\\ud800"'),
    ("lone low surrogate", '"\\udfff"'), ("reversed surrogates", '"\\udc00\\ud800x"'),
    ("surrogate pair", '"\\ud83d\\ude00"'), ("combining", '"e\\u0301\\u0301\\u0301"'),
    ("BOM and ZWSP", '"\\ufeff\\u200b"'), ("controls", '"\\n\\r\\t\\b\\u001b[31m"'),
    ("en", '"en"'), ("auto", '"auto"'), ("empty list", "[]"), ("list", '[16000, "en", null]'),
    ("empty object", "{}"), ("object", '{"type": "ping"}'), ("deep 200", "[" * 200 + "]" * 200),
    ("deep 100000", "[" * 100_000 + "]" * 100_000), ("50k items", f"[{','.join('0' * 50_000)}]"),
]  # fmt: skip
EXTRA = {  # boundary and valid values of each field, beside the value classes
    "sample_rate": ["7999", "8000", "48000", "48001", "44100", '"8000"', '"016000"', '"1e4"',
                    '"16000 "', '"１６０００"'],
    "encoding": ['"s16le"', '"f32le"', '"F32LE"', '"s24le"', '"s16le\\u0000"'],
    "language": ['"de"', '"EN"', '"en "', '"xx"', '"english"'],
    "task": ['"transcribe"', '"translate"', '"Translate"'],
    "partials": ['"yes"', '"off"', '"1"', '"maybe"', "2", '"FALSE"'],
    "format": ['"json"', '"text"', '"JSON"', '"base64"', '"hex"', '"BASE64"'],
    "audio_id": [f'"{"i" * 256}"', f'"{"i" * 257}"', f'"{"é" * 256}"'],
}  # fmt: skip
BASE64_JUNK = {'"$$$$"': BAD_B64, '"A"': BAD_B64, '"AA"': None, '"AAA"': None, '"A==="': None,
               '"===="': None, '"=A=="': None, '"AB=C"': None, '"-_-_"': None,
               '"QUJD\\n\\nREVG"': None, '" \\t\\n "': None, '"data:audio/wav;base64,"': None,
               '"data:audio/wav;base64,!!!!"': BAD_B64, '"data:;base64,QUJD"': None,
               '"data:audio/x;a=b;base64,QUJD"': None, '"ü"': BAD_B64, '"\\u0000AAAA"': BAD_B64,
               '"\\ud800AAA"': BAD_B64, f'"{"A" * 100_000}"': None}  # fmt: skip
KEYS = ['""', '"\\ud800"', f'"{"k" * 100_000}"', '"sample_rate "', '"SAMPLE_RATE"',
        '"type\\u0000"', '"🎙️"']  # fmt: skip
TYPES = ["transcribe", "PING", "ping ", " ping", "Ping", "pingg", "pin", "ping\\u0000", "Config",
         "END", "EOF", "start", "stop", "close", "audio_chunk", "state", "error", "pong", "final",
         "transcription", "\\u0070ing"]  # fmt: skip
NOT_OBJECTS = ["1", '"ping"', "[]", '[{"type": "ping"}]', "null", "true", "1.5", "NaN", '""',
               "{}", '{"Type": "ping"}', '{"TYPE": "ping"}', ' \n{"type": "ping"}\t ']  # fmt: skip
NOT_JSON = ["{oops", "", " ", "{", "}", '{"type": "ping"', '{"type": "ping",}', "{'type': 'ping'}",
            '{"type": "ping"}{"type": "ping"}', '{"type": "ping"} x', '{"type": ping}',
            '{"type": "\\x41"}', '{"type": "\\u12"}', '{"type": "ping", "a": 01}',
            '{"type": "ping", "a": .5}', '{"type": "ping", "a": +1}', '{"type": "ping", "a": 0x10}',
            '{"type": "ping", "a": nan}', '/* c */ {"type": "ping"}', '{"type": "ping"}\x00',
            '\ufeff{"type": "ping"}', "\x00", "[" * 100_000]  # fmt: skip
NOT_UTF8 = [b"\xff\xfe{", b'{"type": "ping", "x": "\xed\xa0\x80"}', b'{"x": "\xc0\xaf"}',
            b'{"x": "\xf4\x90\x80\x80"}', b'{"type": "ping"}\x80', b'"\xe2\x82"']  # fmt: skip
QUERY_VALUES = ["", "abc", "-1", "48001", "16000.0", "%00", "%ED%A0%80", "%F0%9F%98%80",
                "%E2%80%AE", "9" * 3000]  # fmt: skip
UNITS = [b"\0\0\0\0", b"\xff\xff\xff\xff", struct.pack("<f", np.nan), struct.pack("<f", np.inf),
         struct.pack("<f", -np.inf), struct.pack("<f", 1e38), struct.pack("<f", 1e-45),
         b"\xff\x7f\x00\x80"]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    frame: str | bytes
    query: str = ""  # of the connection it is sent on (binary frames follow its encoding)
    expect: str | None = None  # a code the replies must hold; "" no error at all; None: any
    close: int | None = None  # the close code the contract ends its connection with
    reset: bool = False  # a `config`: restore the defaults before the ping
    clip: bool = False  # a readable `audio` message: a `state ready` with an audio_id must end it
    clip_id: str | None = None  # the audio_id that `ready` must echo
    timeout: float = 60


def obj(*pairs: tuple[str, str]) -> str:
    """A JSON object from raw key and value texts."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


def wav(rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1, data: bytes = b"\0\0",
        size: int | None = None) -> bytes:  # fmt: skip
    """A WAV file whose header says what it is told to, true or not."""
    width = channels * max(bits, 8) // 8
    fmt = struct.pack("<HHIIHH", tag, channels & 0xFFFF, rate, rate * width & 0xFFFFFFFF,
                      width & 0xFFFF, bits)  # fmt: skip
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", len(data) if size is None else size) + data
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def clip_files(speech: np.ndarray, rng: random.Random) -> list[tuple[str, bytes, str | None]]:
    """(label, file, expected code) for `audio_data`: real, broken, lying files and bombs."""
    flac = encode_audio(speech, 16000, "flac")
    lying = bytearray(flac)  # STREAMINFO says 2^36-1 samples
    lying[18:26] = (int.from_bytes(lying[18:26], "big") | (2**36 - 1)).to_bytes(8, "big")
    nan = wav(tag=3, bits=32, data=struct.pack("<3f", np.nan, np.inf, 1e38))
    kinds = ("flac", "mp3", "ogg", "webm", "m4a")
    return [*((kind, encode_audio(speech, 16000, kind), None) for kind in kinds),
        ("stereo wav", encode_audio(speech, 16000, "wav", channels=2), None),
        ("flac claiming 2^36 samples", bytes(lying), None), ("fLaC only", b"fLaC", NOT_AUDIO),
        ("truncated flac", flac[: len(flac) // 2], None), ("RIFF only", b"RIFF", NOT_AUDIO),
        ("wav header, no data", wav(data=b""), NOT_AUDIO), ("wav of one sample", wav(), None),
        ("wav of half a sample", wav(data=b"\1"), None), ("wav at 0 Hz", wav(rate=0), None),
        ("wav of 1.5 samples", wav(data=b"\1\2\3"), None), ("wav of 0 bits", wav(bits=0), None),
        ("wav claiming 4 GiB", wav(data=b"\1\0\2", size=0xFFFFFFFF), None),
        ("wav at 2^32-1 Hz", wav(rate=0xFFFFFFFF), None), ("float wav of NaN, inf", nan, None),
        ("wav at 1 Hz, 100 samples", wav(rate=1, data=b"\x10\0" * 100), None),
        ("wav of 0 channels", wav(channels=0), None), ("s24 wav", wav(bits=24, data=b"\1"), None),
        ("wav of 65535 channels", wav(channels=65535, data=bytes(262140)), None),
        ("wav of 7 bits", wav(bits=7, data=b"\1\2\3\4\5"), None),
        ("double wav of 1e300", wav(tag=3, bits=64, data=struct.pack("<2d", np.nan, 1e300)), None),
        ("u8 wav", wav(bits=8, data=bytes(range(256))), None),
        ("extensible wav, no extension", wav(tag=0xFFFE), None),
        ("mp3 sync junk", b"\xff\xfb\x90\x64" * 500, None),
        ("ID3 claiming 256 MB", b"ID3\4\0\0\x7f\x7f\x7f\x7f" + bytes(10), None),
        ("OggS junk", b"OggS" + rng.randbytes(301), None),
        ("PNG header", b"\x89PNG\r\n\x1a\n" + rng.randbytes(64), None),
        ("text, not audio", b"This is a text file, not a recording.\n" * 50, NOT_AUDIO),
        *((f"{n} random bytes", rng.randbytes(n), None) for n in (1, 3, 5, 7, 1001)),
        ("bomb: 40 kB wav at 1 Hz, 5.6 h", wav(rate=1, data=b"\x10\0" * 20000), TOO_BIG),
        (f"bomb: flac of {BOMB_S / 3600:.1f} h of silence", flac_silence(BOMB_S), TOO_BIG),
        (f"flac of {SILENCE_S} s of silence", flac_silence(SILENCE_S), None),
    ]  # fmt: skip


def expectation(message: str, name: str, raw: str) -> str | None:
    """The code the contract plainly gives a value in a field ("": none), or None."""
    k, value = kind(raw), None if kind(raw) == "fatal" else json.loads(raw)
    if k == "fatal":
        return BAD_JSON
    if message in ("ping", "status", "flush"):
        return ""
    if message == "config":
        wrong = {"x": True, "token": False, "partials": k in ("null", "container"),
                 "sample_rate": k in ("null", "bool", "container")}  # fmt: skip
        wrong = wrong.get(name, k != "str")
        return INVALID if wrong else None
    if name == "audio_data":
        return INVALID if k != "str" or value == "" else BASE64_JUNK.get(raw)
    if name in ("language", "task"):
        return INVALID if k in ("bool", "int", "float", "container") else None
    if name == "audio_id":
        too_long = k == "str" and len(value) > 256
        return INVALID if k in ("float", "container") or too_long else None
    if name == "format":
        return "UNSUPPORTED_FORMAT" if k == "str" and value != "base64" else None
    return None


@cache
def cases() -> list[Case]:
    rng = random.Random(20261121)
    speech = load_audio(audio_root() / "jfk" / "jfk.flac")[: 16000 * 2]
    speech_b64 = base64.b64encode(encode_audio(speech, 16000, "ogg")).decode()
    junk_b64 = base64.b64encode(b"not audio " * 20).decode()
    out: list[Case] = []
    for name in ["sample_rate", "encoding", "language", "task", "partials", "format", "token", "x"]:
        for label, raw in VALUES + [(raw, raw) for raw in EXTRA.get(name, [])]:
            frame = obj(('"type"', '"config"'), (json.dumps(name), raw))
            expect = expectation("config", name, raw)
            out.append(Case(f"config.{name}={label}", frame, expect=expect, reset=True))
    for name in ["audio_id", "format", "audio_data", "language", "task", "x"]:
        extra = EXTRA.get(name, []) + list(BASE64_JUNK) * (name == "audio_data")
        for label, raw in VALUES + [(raw[:40], raw) for raw in extra]:
            data = speech_b64 if name in ("audio_id", "language", "task") else junk_b64
            fields = dict(audio_id=f'"fz-{len(out)}"', format='"base64"', audio_data=f'"{data}"')
            fields[name], k = raw, kind(raw)
            frame = obj(('"type"', '"audio"'), *((json.dumps(f), r) for f, r in fields.items()))
            echo = str(json.loads(raw)) if k in ("str", "int") else None  # the id sent, if one
            echo = echo if name == "audio_id" else f"fz-{len(out)}"
            clip_id = echo if echo and len(echo) <= 256 else None
            expect = expectation("audio", name, raw)
            out.append(Case(f"audio.{name}={label}", frame, expect=expect, clip=k != "fatal",
                            clip_id=clip_id))  # fmt: skip
    for label, data, expect in clip_files(speech, rng):
        audio_id, b64 = f"fz-{len(out)}", base64.b64encode(data).decode()
        frame = json.dumps({"type": "audio", "audio_id": audio_id, "audio_data": b64})
        out.append(Case(f"clip: {label}", frame, expect=expect, clip=True, clip_id=audio_id,
                        timeout=300))  # fmt: skip
    for label, raw in VALUES + [(t, f'"{t}"') for t in TYPES]:
        expect = {"fatal": BAD_JSON, "str": "UNKNOWN_MESSAGE_TYPE"}.get(kind(raw), INVALID)
        expect = "" if raw == '"\\u0070ing"' else expect
        out.append(Case(f"type={label}", obj(('"type"', raw)), expect=expect))
    for message in ("ping", "status", "flush"):
        for label, raw in VALUES:
            frame = obj(('"type"', f'"{message}"'), ('"extra"', raw))
            expect = expectation(message, "", raw)
            out.append(Case(f"{message}.extra={label}", frame, expect=expect))
    for key in KEYS:
        junk = ('"audio_data"', f'"{junk_b64}"')
        out += [
            Case(f"config key {key[:20]}", obj(('"type"', '"config"'), (key, "1")), expect=INVALID,
                 reset=True),
            Case(f"ping key {key[:20]}", obj(('"type"', '"ping"'), (key, "1")), expect=""),
            Case(f"audio key {key[:20]}", obj(('"type"', '"audio"'), junk, (key, "1")), clip=True),
        ]  # fmt: skip
    big = obj(('"type"', '"ping"'), ('"pad"', f'"{"a" * LIMIT}"'))
    out += [
        Case("duplicate type: ping, status", '{"type": "ping", "type": "status"}', expect=""),
        Case("duplicate sample_rate", '{"type": "config", "sample_rate": 8000, "sample_rate": "x"}',
             expect=INVALID, reset=True),
        Case("config of nothing", '{"type": "config"}', expect="", reset=True),
        Case("audio of nothing", '{"type": "audio"}', expect=INVALID, clip=True),
        *(Case(f"not an object: {t[:20]!r}", t) for t in NOT_OBJECTS),
        *(Case(f"not JSON: {t[:20]!r}", t, expect=BAD_JSON) for t in NOT_JSON),
        *(Case(f"not UTF-8: {b[:24]!r}", b, close=1007) for b in NOT_UTF8),
        Case("text over the limit", big, expect=TOO_BIG),
        Case("text over the limit in UTF-8 bytes, not in characters",
             obj(('"type"', '"ping"'), ('"pad"', f'"{"é" * (LIMIT * 3 // 5)}"')), expect=TOO_BIG),
        Case("clip over the limit", json.dumps({"type": "audio", "audio_data": "A" * LIMIT}),
             expect=TOO_BIG),
        Case("text far over the limit", big.replace("a" * LIMIT, "a" * 3 * LIMIT), close=1009),
    ]  # fmt: skip
    for key in ["sample_rate", "encoding", "language", "task", "partials", "format", "token", "x"]:
        out += [Case(f"query {key}={v[:12]}", PING, query=f"{key}={v}") for v in QUERY_VALUES]
    out += [Case(f"query {q[:24]}", PING, query=q) for q in
            ["sample_rate=8000&sample_rate=abc", "encoding=f32le&encoding=s16le", "&&&=", "%%%",
             "sample_rate", "=16000", "sample_rate=%31%36%30%30%30"]]  # fmt: skip
    for query, width in [("encoding=s16le", 2), ("encoding=f32le&sample_rate=44100", 4)]:
        sizes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 17, 63, 65, 255, 257, 1023, 1025, 4095,
                 4097, 16001, 32003, 3200, LIMIT + width]  # fmt: skip
        for i, n in enumerate(sizes):
            unit = rng.randbytes(4) if i % 3 == 0 else UNITS[i % len(UNITS)]
            expect = TOO_BIG if n > LIMIT else "BAD_AUDIO_FRAME" if n % width or not n else ""
            frame = (unit * (n // 4 + 1))[:n]
            out.append(Case(f"[{query}] {n} bytes of {unit.hex()}", frame, query, expect))
        other = "f32le" if width == 2 else "s16le"
        out += [
            Case(f"[{query}] config sample_rate after audio",
                 '{"type": "config", "sample_rate": 8000}', query, INVALID),
            Case(f"[{query}] config encoding after audio",
                 f'{{"type": "config", "encoding": "{other}"}}', query, INVALID),
            Case(f"[{query}] flush", '{"type": "flush"}', query, ""),
            Case(f"[{query}] binary far over the limit", bytes(3 * LIMIT), query, close=1009),
            Case(f"[{query}] 1 s after a reconnect", bytes(width * 16000), query, ""),
            Case(f"[{query}] end", '{"type": "end", "x": NaN}', query, close=1000),
        ]  # fmt: skip
    ends = ['{"type": "end"}', '{"type": "eof"}', '{"type": "end", "audio_id": "\\ud800"}',
            '{"type": "eof", "x": ' + "9" * 4300 + "}", '{"type": "end", "x": [[[]]]}']  # fmt: skip
    return out + [Case(f"end {e[:30]}", e, close=1000) for e in ends]


@dataclass
class Outcome:
    case: Case
    replies: list[dict[str, Any]] = field(default_factory=list)
    pongs: int = 0
    closed: int | None = None  # the close code; -1 for a connection lost without one
    ready_ids: list[Any] = field(default_factory=list)  # of the `state ready`s of clips
    log: str = ""  # what the server logged meanwhile
    problems: list[str] = field(default_factory=list)


class Fuzzer:
    """Sends the cases over one connection at a time, reconnecting where one was closed."""

    def __init__(self, server: Server) -> None:
        self.server, self.stack = server, contextlib.ExitStack()
        self.ws: ClientConnection | None = None
        self.query: str | None = None
        self.connections = self.sync = 0

    def run(self, case: Case) -> Outcome:
        for _ in range(5):  # websockets' sync client loses a close frame that comes mid-send
            out = self.attempt(case)  # now and then (a raw socket always gets the 1009)
            if not (case.close == 1009 and out.closed == -1):
                break
        judge(out)
        return out

    def attempt(self, case: Case) -> Outcome:
        out, offset = Outcome(case), self.server.log.stat().st_size
        try:
            if self.ws is None or self.query != case.query:
                self.stack.close()
                url = self.server.url + (f"?{case.query}" if case.query else "")
                self.ws = self.stack.enter_context(connect(url, max_size=None, open_timeout=30))
                self.query, self.connections = case.query, self.connections + 1
                while not self.receive(out).get("session_id"):  # query errors, then `ready`
                    pass
            assert self.ws is not None
            self.ws.send(case.frame, text=True if case.close == 1007 else None)
            self.sync += 1  # a refused clip of a unique id: its `ready` ends the case's replies
            marker = json.dumps({"type": "audio", "audio_id": f"sync-{self.sync}"})
            for frame in [RESET] * case.reset + [PING, marker]:
                self.ws.send(frame)
            self.collect(out, f"sync-{self.sync}")
        except ConnectionClosed as closed:
            out.closed = closed.rcvd.code if closed.rcvd is not None else -1
            self.drain(out)
            self.ws = None
        except TimeoutError:
            out.problems.append(f"no pong (or a clip's `ready`) within {case.timeout:g} s")
            self.stack.close()
            self.ws = None
        with self.server.log.open("rb") as f:
            out.log = f.read()[offset:].decode(errors="replace")
        return out

    def drain(self, out: Outcome) -> None:
        """The replies that came before the close: a send after the server's `end` raises
        ConnectionClosed before the receiving loop has read the `end` already queued."""
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while self.ws is not None:
                self.receive(out, timeout=0)

    def receive(self, out: Outcome, timeout: float = 30) -> dict[str, Any]:
        assert self.ws is not None
        raw, message = self.ws.recv(timeout=timeout), None
        with contextlib.suppress(ValueError):
            message = json.loads(raw)
        if not isinstance(message, dict) or not {"type", "timestamp"} <= message.keys():
            out.problems.append(f"not a JSON message with a type and timestamp: {raw!r:.200}")
            message = {}
        out.replies.append(message)
        return message

    def collect(self, out: Outcome, marker: str) -> None:
        """Replies until the marker's `ready` and the clips' `ready`s, or for a closing case
        until the close. The marker's error and `ready` (sent together) are dropped."""
        deadline, pending, synced = time.monotonic() + out.case.timeout, set(), False
        while out.case.close or not synced or pending:
            message = self.receive(out, max(0.1, deadline - time.monotonic()))
            state = message.get("state") if message.get("type") == "state" else None
            if state == "pong":
                out.pongs += 1
            elif state == "ready" and message.get("audio_id") == marker:
                synced, refusal = True, out.replies[-2] if len(out.replies) > 1 else {}
                del out.replies[-2 if refusal.get("type") == "error" else -1 :]
            elif state == "processing" and "queued" in message:
                pending.add(message.get("audio_id"))
            elif state == "ready" and "audio_id" in message:
                pending.discard(message["audio_id"])
                out.ready_ids.append(message["audio_id"])


def pings(frame: str | bytes) -> int:
    """1 if the frame itself is a `ping` the contract answers, else 0."""
    if isinstance(frame, bytes) or len(frame.encode(errors="surrogatepass")) > LIMIT:
        return 0
    with contextlib.suppress(ValueError, RecursionError):
        message = json.loads(frame)
        return int(isinstance(message, dict) and message.get("type") == "ping")
    return 0


def judge(out: Outcome) -> None:
    case, problems, codes = out.case, out.problems, []
    for m in (m for m in out.replies if m.get("type") == "error"):
        code, text = m.get("code"), m.get("message")
        codes.append(code)
        if code not in DOCUMENTED or code == "INTERNAL_ERROR":
            problems.append(f"error code {code!r}: {text!r:.300}")
        if not isinstance(text, str) or not 0 < len(text) <= 1000:
            problems.append(f"error message missing or long: {text!r:.300}")
        elif isinstance(case.frame, str) and any(
            text[i : i + 61] in case.frame for i in range(len(text) - 60)
        ):
            problems.append(f"error message quotes over 60 characters: {text!r:.300}")
    if case.expect == "" and codes:
        problems.append(f"expected no error, got {codes}")
    elif case.expect and case.expect not in codes:
        problems.append(f"expected {case.expect}, got {codes or 'no error'}")
    if out.closed != case.close:
        problems.append(f"expected close {case.close}, got {out.closed}")
    if case.close is None and out.closed is None and out.pongs < 1 + pings(case.frame):
        problems.append(f"{out.pongs} pong(s) for {1 + pings(case.frame)} ping(s)")
    if case.close == 1000 and not any(m.get("type") == "end" for m in out.replies):
        problems.append("no `end` before the close")
    if case.clip and case.expect != BAD_JSON and out.closed is None:
        if not out.ready_ids:
            problems.append("no `state ready` with an audio_id for the clip")
        elif case.clip_id is not None and case.clip_id not in out.ready_ids:
            problems.append(f"`ready` did not echo audio_id {case.clip_id!r:.60}")
    if "Traceback" in out.log:
        problems.append("traceback in the server log")


def jfk_passes(url: str, stop: threading.Event, results: list[StreamResult | Exception]) -> None:
    """A well-behaved client: JFK in real time, again and again, until the fuzzing is done."""
    samples = load_audio(audio_root() / "jfk" / "jfk.flac")
    while not stop.is_set() or not results:
        try:
            results.append(stream(url, samples, realtime=True, timeout=120))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results.append(exc)


def test_fuzz_every_message_field_and_value_class(tmp_path: Path) -> None:
    all_cases = cases()
    assert len(all_cases) >= 300, len(all_cases)
    server = start_server(tmp_path, "--max-lag", "60", "--max-message-mb", "1")
    stop, jfk = threading.Event(), []  # the JFK passes: StreamResults or exceptions
    thread = threading.Thread(target=jfk_passes, args=(server.url, stop, jfk), daemon=True)
    started = time.monotonic()
    try:
        thread.start()
        time.sleep(1.0)  # the well-behaved session streams before the first case
        fuzzer = Fuzzer(server)
        outcomes = [fuzzer.run(case) for case in all_cases]
        fuzz_s = time.monotonic() - started
        stop.set()
        thread.join(300)
        time.sleep(1.0)  # the last log lines
    finally:
        stop.set()
        server.stop()
    log, failed = server.output(), [o for o in outcomes if o.problems]
    codes = [m["code"] for o in outcomes for m in o.replies if m.get("type") == "error"]
    counts = {c: codes.count(c) for c in sorted(set(codes))}
    print(f"{len(all_cases)} cases over {fuzzer.connections} connections in {fuzz_s:.0f} s; "
          f"{len(failed)} failed; error codes: {counts}")  # fmt: skip
    for o in outcomes:
        said = [m.get("code") or m.get("transcription") for m in o.replies if m["type"] != "state"]
        if o.case.name.startswith("clip: "):  # what the files and bombs got
            print(f"{o.case.name}: {said}")
    for o in failed:
        frame, lines = o.case.frame, [ln for ln in o.log.splitlines() if "INFO" not in ln]
        print(f"CASE {o.case.name} (query {o.case.query!r}): {o.problems}\n  sent ({len(frame)}): "
              f"{frame[:300]!r}\n  closed: {o.closed}; replies: {json.dumps(o.replies)[:1500]}"
              + "".join(f"\n  log: {ln[:300]}" for ln in lines[:40]))  # fmt: skip
    scores = [wer([transcripts("jfk")["jfk.flac"]], [r.text]) if isinstance(r, StreamResult)
              else r for r in jfk]  # fmt: skip
    print(f"JFK beside the fuzzing, WER of each pass: {scores}")
    print("\n".join(f"log: {ln[:300]}" for ln in log.splitlines() if re.search(r"Trace|Warn", ln)))
    assert not failed, f"{len(failed)} cases failed: " + "; ".join(
        f"{o.case.name}: {o.problems}" for o in failed[:30]
    )
    assert scores and all(isinstance(s, float) and s <= 0.1 for s in scores), scores
    assert not [r.errors for r in jfk if isinstance(r, StreamResult) and r.errors]
    assert "Traceback" not in log
