"""OpenAI's Realtime transcription dialect (`/v1/realtime?intent=transcription`).

A client of OpenAI's Realtime API (its SDKs, with the WebSocket base URL pointed here) opens a
transcription session: the server sets `format=openai_realtime` for it, and this module maps
the session's events to OpenAI's (GA shape). Client events: `session.update` (or the beta
`transcription_session.update`), `input_audio_buffer.append` (base64 audio inside JSON),
`.commit` and `.clear`. The streaming policy is the one every dialect uses:

- a VAD region is a turn (an item); with `turn_detection` `server_vad` its start is
  `input_audio_buffer.speech_started`, and its end is `speech_stopped`, `committed` and
  `conversation.item.input_audio_transcription.completed`;
- a final is a `...transcription.delta` of the turn's item: deltas are append-only (partials
  are never sent), and `completed` carries their concatenation;
- with `turn_detection: null`, regions are internal: a `commit` is a flush (Deepgram's
  `Finalize`), and its `Flushed` is `committed` then `completed` for everything since the
  previous commit;
- a `clear` is a flush too, whose text is dropped: `cleared` is sent when the audio before it
  has been decoded, and the turn it cut is never completed.

Deltas of a turn come while it is spoken, before its `committed` (OpenAI sends them after).
The realtime state of a session (`Realtime`) lives on its codec; frames are encoded in order
by the session's one writer, so that state follows what the client has been told.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from whisperwire.protocol import errors as err
from whisperwire.protocol import events as ev
from whisperwire.protocol import messages as msg
from whisperwire.protocol import openai_realtime_session as cfg
from whisperwire.protocol.dialect import Clock, Dialect

if TYPE_CHECKING:
    from whisperwire.protocol.codec import Codec

PATH = "/v1/realtime"
FORMAT = "openai_realtime"
ENCODINGS = {"audio/pcm": "s16le", "audio/pcmu": "mulaw", "audio/pcma": "alaw"}  # -> native
MAX_APPEND_CHARS = 15 * 1024 * 1024  # OpenAI's limit on one append's base64 audio
CLIENT_EVENTS = (
    "session.update, transcription_session.update, input_audio_buffer.append, "
    "input_audio_buffer.commit, input_audio_buffer.clear"
)
SERVER_ERRORS = frozenset({err.INTERNAL_ERROR, err.TRANSCRIPTION_ERROR, err.OVERLOADED})


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


@dataclass
class _Flush:
    kind: str  # "commit" or "clear"
    seconds: float  # audio appended since the previous commit or clear


@dataclass
class Realtime:
    """One realtime session's state: its settings, its turn (item) and what is in flight."""

    settings: cfg.Settings = field(default_factory=cfg.Settings)
    session_id: str = field(default_factory=lambda: _new_id("sess"))
    beta: bool = False  # the client spoke the beta shape: answered in kind
    item: str = field(default_factory=lambda: _new_id("item"))  # the turn being spoken
    previous: str | None = None  # the last committed item
    deltas: list[str] = field(default_factory=list)  # the current item's, as sent
    item_start: float | None = None  # where its speech started (server VAD), seconds
    appended_bytes: int = 0  # since the last commit or clear, at the input rate
    flushes: deque[_Flush] = field(default_factory=deque)  # commits and clears in flight
    completed_in_flush: bool = False  # a region ended inside the oldest flush (server VAD)
    held_start: ev.SpeechStarted | None = None  # a start seen while a clear is in flight
    tuning: dict[str, float] = field(default_factory=dict)  # the VAD's when audio began
    _event_ids: itertools.count[int] = field(default_factory=itertools.count)

    def event_id(self) -> str:
        return f"event_{self.session_id[5:13]}{next(self._event_ids):06d}"

    @property
    def appended_s(self) -> float:
        return self.appended_bytes / self.settings.bytes_per_second

    @property
    def clearing(self) -> bool:
        """The oldest flush in flight is a clear: what comes before it is dropped."""
        return bool(self.flushes) and self.flushes[0].kind == "clear"


# --------------------------------------------------------------------------- frames -> messages


def query(params: Mapping[str, str]) -> dict[str, Any]:
    """The connection's query -> native settings; raises ProtocolError for another intent
    (a conversation session: this server only transcribes)."""
    intent = params.get("intent", "transcription")
    if intent != "transcription":
        raise err.ProtocolError(
            err.INVALID_MESSAGE,
            f"intent: {err.shown(intent)} is not supported; this server only transcribes: "
            "connect with ?intent=transcription",
        )
    return cfg.Settings().native()


def _object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise err.ProtocolError(err.INVALID_JSON, "the frame is not a JSON event") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise err.ProtocolError(err.INVALID_MESSAGE, "an event must be a JSON object with a 'type'")
    return obj


def read(text: str, codec: Codec) -> msg.ClientMessage:
    """A client event -> a message; a refusal names the client's `event_id` (if it gave one)."""
    event_id: Any = None
    try:
        obj = _object(text)
        event_id = obj.get("event_id")
        return _read(obj, codec, _state(codec))
    except err.ProtocolError as exc:
        if isinstance(event_id, str):
            exc.event_id = event_id[: msg.MAX_ID_CHARS]
        raise


def _state(codec: Codec) -> Realtime:
    if codec.realtime is None:
        codec.realtime = Realtime()
    return codec.realtime


def _read(obj: dict[str, Any], codec: Codec, rt: Realtime) -> msg.ClientMessage:
    kind = obj["type"]
    if kind == "input_audio_buffer.append":
        return _append(obj, codec, rt)
    if kind in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
        flush = "commit" if kind.endswith("commit") else "clear"
        if flush == "commit" and rt.appended_bytes == 0:
            raise err.ProtocolError(
                err.INVALID_MESSAGE,
                "input_audio_buffer.commit: the buffer is empty (no audio appended since the "
                "last commit or clear)",
                param="input_audio_buffer",
            )
        rt.flushes.append(_Flush(flush, rt.appended_s))
        rt.appended_bytes = 0
        return msg.Flush()
    if kind in ("session.update", "transcription_session.update"):
        beta = kind == "transcription_session.update"
        session = obj.get("session")
        if not isinstance(session, dict):
            raise err.ProtocolError(
                err.INVALID_MESSAGE, f"{kind}: 'session' must be an object", param="session"
            )
        new = cfg.parse_beta(session, rt.settings) if beta else cfg.parse(session, rt.settings)
        if codec.audio_started and new.input_key != rt.settings.input_key:
            raise err.ProtocolError(
                err.INVALID_MESSAGE,
                "the input audio format cannot change after audio has been appended; open a "
                "new session for another format",
                param="session.audio.input.format",
            )
        if codec.audio_started and new.server_vad and new.vad_tuning() != rt.tuning:
            raise err.ProtocolError(
                err.INVALID_MESSAGE,
                "turn_detection's threshold, prefix_padding_ms and silence_duration_ms cannot "
                "change after audio has been appended (its type can)",
                param="session.audio.input.turn_detection",
            )
        try:
            config = codec.configure(new.native())
        except err.ProtocolError as exc:
            if "language" in exc.message:
                exc.param = "session.audio.input.transcription.language"
            raise
        rt.settings, rt.beta = new, beta
        return config
    raise err.ProtocolError(
        err.UNKNOWN_MESSAGE_TYPE,
        f"unknown or unsupported event type {err.shown(kind)}; a transcription session "
        f"accepts {CLIENT_EVENTS}",
        param="type",
    )


def _append(obj: dict[str, Any], codec: Codec, rt: Realtime) -> msg.AudioFrame:
    audio = obj.get("audio")
    if not isinstance(audio, str) or not audio:
        raise err.ProtocolError(
            err.INVALID_MESSAGE,
            "input_audio_buffer.append: 'audio' must be a non-empty base64 string",
            param="audio",
        )
    if len(audio) > MAX_APPEND_CHARS:
        raise err.ProtocolError(
            err.MESSAGE_TOO_BIG,
            f"input_audio_buffer.append: {len(audio)} characters of base64 exceed the limit of "
            f"{MAX_APPEND_CHARS} (15 MiB); append the audio in smaller pieces",
            param="audio",
        )
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise err.ProtocolError(
            err.BASE64_DECODE_ERROR,
            "input_audio_buffer.append: 'audio' is not valid base64 (standard alphabet, with "
            "its '=' padding)",
            param="audio",
        ) from None
    settings = rt.settings
    encoding = ENCODINGS[settings.format]
    if len(data) % msg.ENCODINGS[encoding]:
        raise err.ProtocolError(
            err.BAD_AUDIO_FRAME,
            f"input_audio_buffer.append: {len(data)} bytes are not a whole number of "
            "16-bit PCM samples (2 bytes each); audio ignored",
            param="audio",
        )
    if not codec.audio_started:  # the policy's VAD settings from now on
        rt.tuning = settings.vad_tuning()
    codec.audio_started = True
    rt.appended_bytes += len(data)
    return msg.AudioFrame(data, encoding, settings.rate)


# --------------------------------------------------------------------------- events -> frames


def _event(rt: Realtime, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": rt.event_id(), **fields}


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _next_item(rt: Realtime) -> None:
    rt.previous, rt.item = rt.item, _new_id("item")
    rt.deltas, rt.item_start = [], None


def _complete(rt: Realtime, seconds: float) -> list[dict[str, Any]]:
    """The current item committed and its transcription completed; the next item begins."""
    transcript = "".join(rt.deltas)
    out = [
        _event(rt, "input_audio_buffer.committed", previous_item_id=rt.previous, item_id=rt.item),
        _event(
            rt,
            "conversation.item.input_audio_transcription.completed",
            item_id=rt.item,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(max(0.0, seconds), 3)},
        ),
    ]
    _next_item(rt)
    return out


def _started(rt: Realtime, start: float) -> dict[str, Any]:
    rt.item_start = start
    kind = "input_audio_buffer.speech_started"
    return _event(rt, kind, audio_start_ms=_ms(start), item_id=rt.item)


def _flushed(rt: Realtime) -> list[dict[str, Any]]:
    if not rt.flushes:
        return []
    flush = rt.flushes.popleft()
    completed, rt.completed_in_flush = rt.completed_in_flush, False
    if flush.kind == "clear":
        out = [_event(rt, "input_audio_buffer.cleared")]
        _next_item(rt)  # the turn it cut is dropped, deltas sent included
        held, rt.held_start = rt.held_start, None
        if held is not None and rt.settings.server_vad:  # the next turn had started
            out.append(_started(rt, held.start))
        return out
    if rt.settings.server_vad and completed:  # the region it cut was committed already
        return []
    return _complete(rt, flush.seconds)


def messages(event: ev.ServerEvent, codec: Codec) -> list[dict[str, Any]]:
    """The event as the OpenAI events it is sent as (often none)."""
    rt = _state(codec)
    vad = rt.settings.server_vad
    match event:
        case ev.Final(text=text) if not rt.clearing:
            piece = text.strip()
            if not piece:
                return []
            delta = f" {piece}" if rt.deltas else piece
            rt.deltas.append(delta)
            kind = "conversation.item.input_audio_transcription.delta"
            return [_event(rt, kind, item_id=rt.item, content_index=0, delta=delta)]
        case ev.SpeechStarted() if rt.clearing:
            rt.held_start = event  # of the next turn if the clear's `Flushed` follows
        case ev.SpeechStarted(start=start) if vad:
            return [_started(rt, start)]
        case ev.SpeechEnded() if rt.clearing:
            rt.held_start = None  # the region was before the clear: dropped
        case ev.SpeechEnded(end=end) if vad:
            start = rt.item_start if rt.item_start is not None else end
            stopped = _event(
                rt, "input_audio_buffer.speech_stopped", audio_end_ms=_ms(end), item_id=rt.item
            )
            rt.completed_in_flush = bool(rt.flushes)
            return [stopped, *_complete(rt, end - start)]
        case ev.Flushed():
            return _flushed(rt)
        case ev.Ready() | ev.Configured():
            created = isinstance(event, ev.Ready)
            name = "transcription_session" if rt.beta else "session"
            kind = f"{name}.{'created' if created else 'updated'}"
            return [_event(rt, kind, session=rt.settings.describe(rt.session_id, rt.beta))]
        case ev.Error():
            return [error(rt.event_id(), event)]
    return []


def error(event_id: str, event: ev.Error) -> dict[str, Any]:
    """OpenAI's error event; `code` is the contract's code in lower case."""
    server = event.code in SERVER_ERRORS
    about = event.event_id if isinstance(event.event_id, str) else None
    return {
        "type": "error",
        "event_id": event_id,
        "error": {
            "type": "server_error" if server else "invalid_request_error",
            "code": event.code.lower(),
            "message": event.message,
            "param": event.param if isinstance(event.param, str) else None,
            "event_id": about,
        },
    }


def encode_many(event: ev.ServerEvent, codec: Codec) -> list[str]:
    return [json.dumps(m, ensure_ascii=True) for m in messages(event, codec)]


def encode(event: ev.ServerEvent, clock: Clock) -> str | None:
    """Without a session (a refusal at connect): only errors are sent."""
    if isinstance(event, ev.Error):
        return json.dumps(error(_new_id("event"), event), ensure_ascii=True)
    return None


DIALECT = Dialect(FORMAT, encode, read, encode_many=encode_many)
