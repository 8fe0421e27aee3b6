"""Sans-I/O protocol codec: client frames -> typed messages, events -> server frames.

Nothing here touches a socket, a thread or a model. A `Codec` holds one session's protocol
state (its effective stream settings and whether audio has started) so that it can validate
each frame against them, exactly as `websockets`' and `h11`'s protocol objects do.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# --------------------------------------------------------------------------- error codes

INVALID_JSON = "INVALID_JSON"
UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
INVALID_MESSAGE = "INVALID_MESSAGE"
UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
BASE64_DECODE_ERROR = "BASE64_DECODE_ERROR"
AUDIO_DECODE_ERROR = "AUDIO_DECODE_ERROR"
BAD_AUDIO_FRAME = "BAD_AUDIO_FRAME"
MESSAGE_TOO_BIG = "MESSAGE_TOO_BIG"
UNAUTHORIZED = "UNAUTHORIZED"
OVERLOADED = "OVERLOADED"
TRANSCRIPTION_ERROR = "TRANSCRIPTION_ERROR"
INTERNAL_ERROR = "INTERNAL_ERROR"
IDLE_TIMEOUT = "IDLE_TIMEOUT"
RESUME_FAILED = "RESUME_FAILED"
SESSION_TIMEOUT = "SESSION_TIMEOUT"

ERROR_CODES = frozenset(
    {
        INVALID_JSON,
        UNKNOWN_MESSAGE_TYPE,
        INVALID_MESSAGE,
        UNSUPPORTED_FORMAT,
        BASE64_DECODE_ERROR,
        AUDIO_DECODE_ERROR,
        BAD_AUDIO_FRAME,
        MESSAGE_TOO_BIG,
        UNAUTHORIZED,
        OVERLOADED,
        TRANSCRIPTION_ERROR,
        INTERNAL_ERROR,
        IDLE_TIMEOUT,
        RESUME_FAILED,
        SESSION_TIMEOUT,
    }
)

ENCODINGS: dict[str, int] = {"s16le": 2, "f32le": 4}  # bytes per sample
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_ID_CHARS = 256  # a clip's audio_id
SHOWN_CHARS = 60  # of a client's value quoted in an error message


def shown(value: Any) -> str:
    """A client's value as an error message quotes it: ASCII-escaped (a lone surrogate or a
    control character cannot break the frame) and cut to `SHOWN_CHARS`."""
    text = ascii(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def incident() -> str:
    """A short id for an error of the server's own: the client gets it, the log has it with
    the traceback; the exception's text stays in the log."""
    return uuid.uuid4().hex[:8]


class ProtocolError(Exception):
    """A client frame the contract rejects; `code` is one of the contract's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.clip: str | None = None  # set for a refused `audio` message: its audio_id


# --------------------------------------------------------------------------- settings


class StreamConfig(BaseModel):
    """A session's effective stream settings (query parameters and `config` messages)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    sample_rate: int = Field(16000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    encoding: Literal["s16le", "f32le"] = "s16le"
    language: str = "en"
    task: Literal["transcribe", "translate"] = "transcribe"
    partials: bool = True
    format: Literal["json", "text"] = "json"

    @field_validator("partials", mode="before")
    @classmethod
    def _boolish(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError("expected true or false")
        return value

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _intish(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, str):  # a query parameter: digits only, no sign or space
            if not re.fullmatch(r"[0-9]{1,9}", value):
                raise ValueError("expected an integer such as 16000")
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


CONFIG_KEYS = frozenset(StreamConfig.model_fields) | {"token"}


# --------------------------------------------------------------------------- client messages


@dataclass(frozen=True)
class AudioFrame:
    """A binary frame of PCM in the session's encoding and sample rate."""

    data: bytes
    encoding: str
    sample_rate: int


@dataclass(frozen=True)
class Config:
    changes: dict[str, Any]


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class End:
    pass


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class ClipAudio:
    """A whole clip: `audio_data` is still base64 text; decoding it is the clip layer's job."""

    audio_id: str | None
    format: str
    audio_data: str
    language: str | None = None
    task: str | None = None


ClientMessage = AudioFrame | Config | Flush | End | Ping | Status | ClipAudio


# --------------------------------------------------------------------------- codec


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@dataclass
class Codec:
    """One session's protocol state and frame codec."""

    config: StreamConfig = field(default_factory=StreamConfig)
    languages: frozenset[str] | None = None  # codes the model accepts ("auto" is added)
    max_message_bytes: int = 64 * 1024 * 1024
    audio_started: bool = False

    # ---- parsing

    def apply_query(self, params: dict[str, str]) -> None:
        """Apply connection query parameters; raises ProtocolError(INVALID_MESSAGE)."""
        known = {k: v for k, v in params.items() if k in StreamConfig.model_fields}
        if known:
            self.config = self._validated(known)

    def receive_binary(self, data: bytes) -> AudioFrame:
        if len(data) > self.max_message_bytes:
            raise ProtocolError(MESSAGE_TOO_BIG, self._too_big(len(data)))
        width = ENCODINGS[self.config.encoding]
        if len(data) == 0 or len(data) % width:
            raise ProtocolError(
                BAD_AUDIO_FRAME,
                f"binary frame of {len(data)} bytes is not a whole number of "
                f"{self.config.encoding} samples ({width} bytes each); frame ignored",
            )
        self.audio_started = True
        return AudioFrame(data, self.config.encoding, self.config.sample_rate)

    def receive_text(self, text: str) -> ClientMessage:
        # The limit is in bytes as sent (UTF-8): up to 4 per character.
        if len(text) * 4 > self.max_message_bytes:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.max_message_bytes:
                raise ProtocolError(MESSAGE_TOO_BIG, self._too_big(size))
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(INVALID_JSON, f"text frame is not valid JSON: {exc}") from None
        except RecursionError:
            raise ProtocolError(INVALID_JSON, "text frame nests JSON too deeply") from None
        except ValueError:  # Python's limit on the digits of an integer
            raise ProtocolError(
                INVALID_JSON, "text frame has a number of more than 4300 digits"
            ) from None
        if not isinstance(obj, dict):
            raise ProtocolError(INVALID_MESSAGE, "a message must be a JSON object with a 'type'")
        kind = obj.get("type")
        if not isinstance(kind, str):
            raise ProtocolError(INVALID_MESSAGE, "message has no string field 'type'")
        if kind == "config":
            return self._receive_config(obj)
        if kind == "flush":
            return Flush()
        if kind in ("end", "eof"):
            return End()
        if kind == "ping":
            return Ping()
        if kind == "status":
            return Status()
        if kind == "audio":
            return self._receive_clip(obj)
        raise ProtocolError(
            UNKNOWN_MESSAGE_TYPE,
            f"unknown message type {shown(kind)}; expected one of "
            "config, flush, end, eof, ping, status, audio",
        )

    def _receive_config(self, obj: dict[str, Any]) -> Config:
        changes = {k: v for k, v in obj.items() if k != "type"}
        unknown = sorted(set(changes) - CONFIG_KEYS)
        if unknown:
            raise ProtocolError(
                INVALID_MESSAGE,
                f"config: unknown field(s) {shown(', '.join(unknown))}; "
                f"allowed: {', '.join(sorted(CONFIG_KEYS))}",
            )
        changes.pop("token", None)
        if self.audio_started:
            locked = [k for k in ("sample_rate", "encoding") if k in changes]
            locked = [k for k in locked if changes[k] != getattr(self.config, k)]
            if locked:
                raise ProtocolError(
                    INVALID_MESSAGE,
                    f"config: {' and '.join(locked)} cannot change after audio has been sent; "
                    "open a new session for a different audio format",
                )
        self.config = self._validated(changes)
        return Config(changes)

    def _receive_clip(self, obj: dict[str, Any]) -> ClipAudio:
        try:
            return self._parse_clip(obj)
        except ProtocolError as exc:
            audio_id = obj.get("audio_id")
            named = isinstance(audio_id, (str, int)) and not isinstance(audio_id, bool)
            exc.clip = str(audio_id)[:MAX_ID_CHARS] if named else ""
            raise

    def _parse_clip(self, obj: dict[str, Any]) -> ClipAudio:
        audio_id = obj.get("audio_id")
        if audio_id is not None and (
            not isinstance(audio_id, (str, int)) or isinstance(audio_id, bool)
        ):
            raise ProtocolError(INVALID_MESSAGE, "audio: 'audio_id' must be a string")
        if audio_id is not None and len(str(audio_id)) > MAX_ID_CHARS:
            raise ProtocolError(
                INVALID_MESSAGE, f"audio: 'audio_id' is longer than {MAX_ID_CHARS} characters"
            )
        if "audio_data" not in obj:
            raise ProtocolError(INVALID_MESSAGE, "audio: missing field 'audio_data'")
        data = obj["audio_data"]
        if not isinstance(data, str):
            raise ProtocolError(INVALID_MESSAGE, "audio: 'audio_data' must be a base64 string")
        fmt = obj.get("format", "base64")
        if fmt != "base64":
            raise ProtocolError(
                UNSUPPORTED_FORMAT, f"audio: format {shown(fmt)} is not supported; use 'base64'"
            )
        language = obj.get("language")
        task = obj.get("task")
        if language is not None or task is not None:
            probe = {k: v for k, v in (("language", language), ("task", task)) if v is not None}
            self._validated(probe)  # raises on a bad value; does not change the session
        return ClipAudio(None if audio_id is None else str(audio_id), fmt, data, language, task)

    def _validated(self, changes: dict[str, Any]) -> StreamConfig:
        merged = self.config.model_dump() | changes
        try:
            new = StreamConfig.model_validate(merged)
        except ValidationError as exc:
            raise ProtocolError(INVALID_MESSAGE, _describe_validation_error(exc)) from None
        if "language" in changes:
            self._check_language(new.language)
        return new

    def _check_language(self, code: str) -> None:
        if self.languages is None or code == "auto" or code in self.languages:
            return
        if len(self.languages) == 1:
            hint = f"this model only knows {next(iter(self.languages))!r}"
        else:
            hint = "use 'auto' or a Whisper language code such as 'en', 'de', 'fr'"
        raise ProtocolError(INVALID_MESSAGE, f"language: unknown code {shown(code)}; {hint}")

    def _too_big(self, size: int) -> str:
        return (
            f"message of {size} bytes exceeds the server's limit of {self.max_message_bytes} "
            "bytes (its --max-message-mb); split the audio, compress it (Opus, MP3) or stream "
            "it as PCM frames"
        )

    # ---- encoding

    def encode(self, event: dict[str, Any]) -> str | None:
        """Server event -> text frame in the session's format, or None if the format drops it."""
        if self.config.format == "text":
            return encode_text(event)
        return encode_json(event)


def timestamp() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def encode_json(event: dict[str, Any]) -> str:
    payload = {**event, "timestamp": timestamp()}
    text = json.dumps(payload, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate a client sent (in an id): escape it
        return json.dumps(payload, ensure_ascii=True)
    return text


def encode_text(event: dict[str, Any]) -> str | None:
    """The whisper.cpp-stream dialect: `CONNECTION_ID:<id>`, then final texts (a clip's whole
    transcription is one), nothing else."""
    kind = event.get("type")
    if kind == "state" and event.get("state") == "ready" and "session_id" in event:
        return f"CONNECTION_ID:{event['session_id']}"
    if kind == "final":
        return str(event["text"])
    if kind == "transcription":
        return str(event["transcription"])
    return None


def error_event(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **extra}
