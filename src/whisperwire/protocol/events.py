"""Every message the server sends, as a typed event: the one place that says what it holds.

An event is a frozen dataclass. Its fields, in declaration order, are its fields on the wire,
after `type` (the class's `TYPE`); a state event's first field is its `state`. A field whose
value is `UNSET` is left out of the message (it is not `null`: `None` is sent as `null`).
Fields declared with `seconds()` are sent to the millisecond. Dialects (`native`, `whispercpp`,
`deepgram`) only encode these events; adding a field to an event changes this file alone.
What the native wire does not say (Deepgram's `speech_final`, its VAD events) is declared
with `dialect_only()` (a field the native dialect leaves out) or `NATIVE = False` (an event
it does not send).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict

from whisperwire.protocol.messages import StreamConfig

DIGITS = "digits"  # a field's metadata: round to this many decimals on the wire
HIDDEN = "hidden"  # a field's metadata: the native dialect leaves it out


class Unset(enum.Enum):
    """The value of a field that the message leaves out."""

    UNSET = "unset"


UNSET = Unset.UNSET


def seconds(default: float | Unset | None = None) -> Any:
    """A time or a share sent to the millisecond (required when `default` is None)."""
    if default is None:
        return field(metadata={DIGITS: 3})
    return field(default=default, metadata={DIGITS: 3})


def dialect_only(default: Any) -> Any:
    """A field for dialects other than native (which leaves it out)."""
    return field(default=default, metadata={HIDDEN: True})


def fixed_state(name: str) -> Any:
    """A state event's fixed `state`."""
    return field(default=name, init=False)


class SessionConfig(StreamConfig):
    """The greeting's `config`: the stream settings and what the server tells about itself."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    max_message_bytes: int
    model: str
    languages: list[str] | Literal["all"]


@dataclass(frozen=True, kw_only=True)
class Event:
    TYPE: ClassVar[str]
    NATIVE: ClassVar[bool] = True  # False: the native dialect does not send it


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True, kw_only=True)
class Ready(Event):
    """The greeting: a new session, or one resumed (`resumed`, `audio_offset`)."""

    TYPE = "state"
    state: Literal["ready"] = fixed_state("ready")
    session_id: str
    resumed: bool | Unset = UNSET
    audio_offset: float | Unset = seconds(UNSET)  # seconds of audio the server has
    message: str
    config: StreamConfig
    server: str | Unset = UNSET  # which replica holds the session (under Ray Serve)


@dataclass(frozen=True, kw_only=True)
class Partial(Event):
    TYPE = "partial"
    segment_id: int
    text: str
    stable: str
    start: float = seconds()
    end: float = seconds()
    words: tuple[Word, ...] = dialect_only(())  # Deepgram's interim words


@dataclass(frozen=True, kw_only=True)
class Word:
    word: str
    start: float = seconds()
    end: float = seconds()
    probability: float = seconds()


@dataclass(frozen=True, kw_only=True)
class Final(Event):
    TYPE = "final"
    segment_id: int
    text: str
    start: float = seconds()
    end: float = seconds()
    language: str | None
    words: tuple[Word, ...]
    speech_final: bool = dialect_only(False)  # the last final of a region a pause ended
    from_finalize: bool = dialect_only(False)  # the last final of a region a flush ended


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(Event):
    """A speech region (the VAD's) is decoded from now on."""

    TYPE = "speech_started"
    NATIVE = False
    start: float = seconds()


@dataclass(frozen=True, kw_only=True)
class SpeechEnded(Event):
    """A speech region's finals are all out (`last_word_end` None: it had no words)."""

    TYPE = "speech_ended"
    NATIVE = False
    end: float = seconds()
    last_word_end: float | None


@dataclass(frozen=True, kw_only=True)
class RegionMark(Event):
    """A pause or a flush that no final marks (the region's words were all final already,
    or, for a flush, no region was open): this carries `speech_final` or `from_finalize`."""

    TYPE = "region_mark"
    NATIVE = False
    at: float = seconds()
    speech_final: bool
    from_finalize: bool


@dataclass(frozen=True, kw_only=True)
class Flushed(Event):
    TYPE = "state"
    state: Literal["flushed"] = fixed_state("flushed")


@dataclass(frozen=True, kw_only=True)
class Ended(Event):
    TYPE = "end"
    duration: float = seconds()  # of audio received
    segments: int  # finals sent


@dataclass(frozen=True, kw_only=True)
class Configured(Event):
    TYPE = "state"
    state: Literal["configured"] = fixed_state("configured")
    config: StreamConfig


@dataclass(frozen=True, kw_only=True)
class Pong(Event):
    TYPE = "state"
    state: Literal["pong"] = fixed_state("pong")
    message: str = "pong"


@dataclass(frozen=True, kw_only=True)
class StatusReport(Event):
    """The reply to `status`; the clip fields while clips are in hand, `load` with a monitor."""

    TYPE = "state"
    state: Literal["ready", "processing"]
    session_id: str
    duration: float = seconds()  # of streamed audio
    queued_jobs: int  # server-wide
    step: float = seconds()  # of audio between partial decodes now
    audio_id: str | Unset = UNSET  # the running clip
    progress: float | Unset = seconds(UNSET)
    clips_queued: int | Unset = UNSET
    load: Mapping[str, Any] | Unset = UNSET


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    TYPE = "error"
    code: str  # one of `errors.ERROR_CODES`
    message: str
    audio_id: str | Unset = UNSET  # the clip it is about
    retry_after: float | Unset = UNSET  # seconds
    param: str | Unset = dialect_only(UNSET)  # the parameter at fault (OpenAI Realtime)
    event_id: str | Unset = dialect_only(UNSET)  # the client's refused event (OpenAI Realtime)


# --------------------------------------------------------------------------- whole clips


@dataclass(frozen=True, kw_only=True)
class ClipProcessing(Event):
    """A clip accepted (with `queued`: clips ahead of it), then its progress per window."""

    TYPE = "state"
    state: Literal["processing"] = fixed_state("processing")
    audio_id: str
    progress: float = seconds()
    queued: int | Unset = UNSET


@dataclass(frozen=True, kw_only=True)
class ClipSegment:
    start: float = seconds()
    end: float = seconds()
    text: str
    window: float = seconds()  # where the 30 s window that decoded it starts


@dataclass(frozen=True, kw_only=True)
class Transcription(Event):
    TYPE = "transcription"
    transcription: str
    audio_id: str
    language: str | None  # None: nothing was heard
    duration: float = seconds()
    segments: tuple[ClipSegment, ...]


@dataclass(frozen=True, kw_only=True)
class ClipReady(Event):
    """Ends every clip, answered or refused (`audio_id` None: a refused message had none)."""

    TYPE = "state"
    state: Literal["ready"] = fixed_state("ready")
    audio_id: str | None


# --------------------------------------------------------------------------- forwarding


@dataclass(frozen=True, kw_only=True)
class ForwardReply(Event):
    """The outcome of forwarding a batch of finals to the `--forward-url` backend."""

    TYPE = "forward"
    batch: int
    segment_ids: list[int]
    status: int | None  # HTTP status; None: no reply
    response: Any  # the backend's reply: JSON, or text
    error: str | None
    body: Any = UNSET  # the whole reply, where `response` is a part of it (llama, openai)


ServerEvent = (
    Ready
    | Partial
    | Final
    | SpeechStarted
    | SpeechEnded
    | RegionMark
    | Flushed
    | Ended
    | Configured
    | Pong
    | StatusReport
    | Error
    | ClipProcessing
    | Transcription
    | ClipReady
    | ForwardReply
)
