"""The Deepgram live dialect (`/v1/listen`): Deepgram's query, messages and events.

A client of Deepgram's live API (its SDKs, with their base URL pointed here) connects to
`/v1/listen` with Deepgram's query parameters or its `Token` key (`speaks_deepgram`: that
path is the native protocol's too, for clients that send neither); the server sets
`format=deepgram` for it, and `parse_query` turns the parameters into native settings plus
the options only this dialect uses (`Listen`). Events go out as Deepgram's messages:
partials as interim `Results` (`is_final` false), finals as final ones (`speech_final` on
the last final of a region a pause ended, `from_finalize` on the last of a region
`Finalize` ended; an empty final carries the mark when no words were left to make final),
`SpeechStarted` (`vad_events=true`), `UtteranceEnd` after a region with words
(`utterance_end_ms` given), and `Metadata` before the close; errors as
`{"type": "Error", "variant", "description"}`. Client text frames: `KeepAlive`, `Finalize`
(a flush) and `CloseStream` (end of stream).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whisperwire.protocol import errors as err
from whisperwire.protocol import events as ev
from whisperwire.protocol import messages as msg
from whisperwire.protocol.dialect import Clock, Dialect
from whisperwire.protocol.native import timestamp

if TYPE_CHECKING:
    from whisperwire.protocol.codec import Codec

PATH = "/v1/listen"  # Deepgram's path; also the native protocol's second path
# What only a Deepgram client sends: its query parameters that the native protocol does not
# have, and its encodings (native ones are s16le and f32le).
DEEPGRAM_PARAMETERS = frozenset(
    {
        "channels", "interim_results", "endpointing", "utterance_end_ms", "vad_events",
        "model", "punctuate", "smart_format", "diarize", "multichannel", "numerals",
        "profanity_filter", "redact", "replace", "search", "keywords", "keyterm", "tag",
        "version", "filler_words", "dictation", "no_delay", "mip_opt_out", "callback",
        "callback_method", "extra", "detect_language", "alternatives", "tier",
    }
)  # fmt: skip
NATIVE_ENCODINGS = ("s16le", "f32le")
ENCODINGS = {"linear16": "s16le", "mulaw": "mulaw", "alaw": "alaw"}  # Deepgram's -> native
CHANNEL = [0, 1]  # channel index, of channel count: always mono
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
MESSAGE_TYPES = "KeepAlive, Finalize, CloseStream"


@dataclass(frozen=True)
class Listen:
    """A Deepgram client's query parameters, checked."""

    sample_rate: int = 16000
    encoding: str = "s16le"  # the native name of its `encoding`
    interim_results: bool = False  # Deepgram's default
    language: str | None = None  # a Whisper code or "auto"; None: the server's
    utterance_end_ms: int | None = None  # given: UtteranceEnd after each region with words
    vad_events: bool = False  # SpeechStarted when a region starts
    endpointing: int | None = None  # accepted; the server's VAD (--min-silence) decides
    model: str = ""  # accepted; the server's model transcribes

    def query(self) -> dict[str, Any]:
        """The native settings these options stand for."""
        out: dict[str, Any] = {
            "format": "deepgram",
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "partials": self.interim_results,
        }
        if self.language is not None:
            out["language"] = self.language
        return out


def _flag(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise err.ProtocolError(
        err.INVALID_MESSAGE, f"{name}: expected true or false, not {err.shown(value)}"
    )


def _milliseconds(params: Mapping[str, str], name: str, off: bool) -> int | None:
    value = params.get(name)
    if value is None or (off and value.lower() in FALSE):
        return None
    if not re.fullmatch(r"[0-9]{1,7}", value):
        what = "a number of milliseconds" + (" or false" if off else "")
        raise err.ProtocolError(
            err.INVALID_MESSAGE, f"{name}: expected {what}, not {err.shown(value)}"
        )
    return int(value)


def speaks_deepgram(path: str, params: Mapping[str, str], authorization: str | None) -> bool:
    """Is a connection to `path` a Deepgram client? `/v1/listen` is Deepgram's path and, by
    the protocol's contract, the native endpoint's second path too. A Deepgram client gives
    itself away: its SDKs send `Authorization: Token KEY`, and its query has parameters or
    an encoding the native protocol does not have. A client that sends none of these (no
    query, or only native parameters, a Bearer key or none) is a native one."""
    if path != PATH:
        return False
    scheme = (authorization or "").split(" ", 1)[0].lower()
    encoding = params.get("encoding")
    return (
        scheme == "token"
        or any(name in DEEPGRAM_PARAMETERS for name in params)
        or (encoding is not None and encoding not in NATIVE_ENCODINGS)
    )


def parse_query(params: Mapping[str, str]) -> Listen:
    """Deepgram's query parameters -> `Listen`; raises ProtocolError for a value this server
    cannot honour (another encoding, more than one channel). Parameters it has no use for
    (`punctuate`, `smart_format`, `tag`...) are accepted and ignored."""
    encoding = params.get("encoding", "linear16")
    if encoding not in ENCODINGS:
        raise err.ProtocolError(
            err.UNSUPPORTED_FORMAT,
            f"encoding: {err.shown(encoding)} is not supported; send encoding=linear16 "
            "(16-bit little-endian PCM), mulaw or alaw (G.711)",
        )
    channels = params.get("channels", "1")
    if channels != "1":
        raise err.ProtocolError(
            err.UNSUPPORTED_FORMAT,
            f"channels: {err.shown(channels)} is not supported; send channels=1 (mono)",
        )
    if _flag(params, "multichannel", False):
        raise err.ProtocolError(err.UNSUPPORTED_FORMAT, "multichannel=true is not supported")
    rate = params.get("sample_rate", "16000")
    if not re.fullmatch(r"[0-9]{1,9}", rate) or not (
        msg.MIN_SAMPLE_RATE <= int(rate) <= msg.MAX_SAMPLE_RATE
    ):
        raise err.ProtocolError(
            err.INVALID_MESSAGE,
            f"sample_rate: {err.shown(rate)} is not an integer from {msg.MIN_SAMPLE_RATE} "
            f"to {msg.MAX_SAMPLE_RATE}",
        )
    language = params.get("language")
    if language is not None:  # en-US -> en; multi -> auto
        language = "auto" if language == "multi" else language.split("-")[0].lower()
    return Listen(
        sample_rate=int(rate),
        encoding=ENCODINGS[encoding],
        interim_results=_flag(params, "interim_results", False),
        language=language,
        utterance_end_ms=_milliseconds(params, "utterance_end_ms", off=False),
        vad_events=_flag(params, "vad_events", False),
        endpointing=_milliseconds(params, "endpointing", off=True),
        model=params.get("model", ""),
    )


# --------------------------------------------------------------------------- events -> frames


def _bare(word: str) -> str:
    """Deepgram's `word`: lower case, without punctuation around it."""
    return re.sub(r"^[^\w']+|[^\w']+$", "", word.strip()).lower()


def _results(codec: Codec, start: float, end: float, text: str, **flags: Any) -> dict[str, Any]:
    words: tuple[ev.Word, ...] = flags.pop("words", ())
    confidence = sum(w.probability for w in words) / len(words) if words else 0.0
    return {
        "type": "Results",
        "channel_index": CHANNEL,
        "duration": round(max(0.0, end - start), 3),
        "start": round(start, 3),
        **flags,
        "channel": {
            "alternatives": [
                {
                    "transcript": text.strip(),
                    "confidence": round(confidence, 3),
                    "words": [
                        {
                            "word": _bare(w.word),
                            "start": round(w.start, 3),
                            "end": round(w.end, 3),
                            "confidence": round(w.probability, 3),
                            "punctuated_word": w.word.strip(),
                        }
                        for w in words
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": codec.session_id,
            "model_info": {"name": codec.model, "version": "whisperwire", "arch": "whisper"},
            "model_uuid": codec.model,
        },
    }


def message(event: ev.ServerEvent, codec: Codec) -> dict[str, Any] | None:
    """The event as the Deepgram message it is sent as, or None where none is sent."""
    listen = codec.listen or Listen()
    match event:
        case ev.Partial(start=start, end=end, text=text, words=words):
            flags = {"is_final": False, "speech_final": False, "from_finalize": False}
            return _results(codec, start, end, text, words=words, **flags)
        case ev.Final():
            return _results(
                codec,
                event.start,
                event.end,
                event.text,
                is_final=True,
                speech_final=event.speech_final,
                from_finalize=event.from_finalize,
                words=event.words,
            )
        case ev.RegionMark(at=at, speech_final=speech_final, from_finalize=from_finalize):
            flags = {"speech_final": speech_final, "from_finalize": from_finalize}
            return _results(codec, at, at, "", is_final=True, **flags)
        case ev.SpeechStarted(start=start) if listen.vad_events:
            return {"type": "SpeechStarted", "channel": CHANNEL, "timestamp": round(start, 3)}
        case ev.SpeechEnded(last_word_end=last) if listen.utterance_end_ms and last is not None:
            return {"type": "UtteranceEnd", "channel": CHANNEL, "last_word_end": round(last, 3)}
        case ev.Ended(duration=duration):
            return {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": codec.session_id,
                "sha256": "",
                "created": timestamp(codec.clock()),
                "duration": round(duration, 3),
                "channels": 1,
                "models": [codec.model],
                "model_info": {
                    codec.model: {"name": codec.model, "version": "whisperwire", "arch": "whisper"}
                },
            }
        case ev.Error(code=code, message=text):
            return error(code, text)
    return None


def error(code: str, description: str) -> dict[str, Any]:
    """An error as Deepgram sends one; `variant` is the contract's code."""
    return {"type": "Error", "variant": code, "description": description, "message": ""}


def encode_in(event: ev.ServerEvent, codec: Codec) -> str | None:
    body = message(event, codec)
    return None if body is None else json.dumps(body, ensure_ascii=True)


def encode(event: ev.ServerEvent, clock: Clock) -> str | None:
    """Without a session (a refusal at connect): only errors are sent."""
    if isinstance(event, ev.Error):
        return json.dumps(error(event.code, event.message), ensure_ascii=True)
    return None


# --------------------------------------------------------------------------- frames -> messages


def read(text: str, codec: Codec) -> msg.ClientMessage:
    """`KeepAlive`, `Finalize`, `CloseStream` -> Ping, Flush, End."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise err.ProtocolError(err.INVALID_JSON, "text frame is not a JSON message") from None
    kind = obj.get("type") if isinstance(obj, dict) else None
    if not isinstance(kind, str):
        raise err.ProtocolError(
            err.INVALID_MESSAGE, "a message must be a JSON object with a 'type'"
        )
    if kind == "KeepAlive":
        return msg.Ping()
    if kind == "Finalize":
        return msg.Flush()
    if kind == "CloseStream":
        return msg.End()
    raise err.ProtocolError(
        err.UNKNOWN_MESSAGE_TYPE,
        f"unknown message type {err.shown(kind)}; expected one of {MESSAGE_TYPES}",
    )


DIALECT = Dialect("deepgram", encode, read, encode_in)
