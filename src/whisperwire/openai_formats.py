"""The OpenAI audio API's parameters and answers, sans-I/O: form fields in, a checked request
out; a transcript's segments in, the body of each `response_format` out; the error body and
server-sent events (`stream=true`) as OpenAI writes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from whisperwire.protocol import shown

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
MEDIA_TYPES: dict[ResponseFormat, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
FIELDS = frozenset(
    {
        "file",
        "model",
        "language",
        "prompt",
        "temperature",
        "response_format",
        "timestamp_granularities[]",
        "timestamp_granularities",
        "stream",
        "chunking_strategy",  # accepted: the server always cuts clips its own way
        "include[]",
    }
)


class OpenAIError(Exception):
    """An error answered with OpenAI's body: `{"error": {message, type, param, code}}`."""

    TYPES = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_exceeded",
        500: "server_error",
        503: "server_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(self.status, "invalid_request_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def bad(param: str, message: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, f"{param}: {message}", param=param, code=code)


@dataclass(frozen=True)
class AudioRequest:
    """A checked transcription or translation request (the file apart)."""

    task: Literal["transcribe", "translate"]
    model: str = ""
    language: str | None = None  # None: detected
    prompt: str = ""
    temperature: float | None = None  # None: the fallback ladder from 0
    response_format: ResponseFormat = "json"
    granularities: frozenset[str] = frozenset({"segment"})
    stream: bool = False

    @property
    def words(self) -> bool:
        return "word" in self.granularities


def parse_request(
    task: Literal["transcribe", "translate"],
    fields: Mapping[str, Sequence[str]],
    languages: frozenset[str],
) -> AudioRequest:
    """The form's text fields (each name with its values) -> an AudioRequest, or a 400
    naming the parameter. `languages`: the codes the model accepts."""
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        known = ", ".join(sorted(FIELDS - {"timestamp_granularities", "include[]"}))
        raise bad(
            unknown[0], f"unknown parameter; this endpoint takes {known}", "unknown_parameter"
        )

    def one(name: str) -> str | None:
        values = fields.get(name, ())
        if len(values) > 1:
            raise bad(name, f"given {len(values)} times; give it once")
        return values[0] if values else None

    language = one("language") or None
    if task == "translate" and language is not None:
        raise bad("language", "translations take no language: the answer is always English")
    if language is not None:
        language = language.strip().lower()
        if language not in languages:
            if len(languages) == 1:
                hint = f"this model only knows {next(iter(languages))!r}"
            else:
                hint = "use an ISO-639-1 code such as 'en', 'de', 'fr', or leave it out to detect"
            raise bad("language", f"unknown code {shown(language)}; {hint}")
    response_format = one("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise bad(
            "response_format",
            f"{shown(response_format)} is not one of {', '.join(RESPONSE_FORMATS)}",
        )
    granularities = [
        *fields.get("timestamp_granularities[]", ()),
        *fields.get("timestamp_granularities", ()),
    ]
    for value in granularities:
        if value not in GRANULARITIES:
            raise bad("timestamp_granularities[]", f"{shown(value)} is not segment or word")
    if granularities and response_format != "verbose_json":
        raise bad(
            "timestamp_granularities[]",
            "timestamps come only with response_format=verbose_json",
        )
    stream = _boolean("stream", one("stream"))
    if stream and response_format not in ("json", "text"):
        raise bad(
            "stream",
            f"stream=true sends text deltas; response_format {response_format} cannot be "
            "streamed (use json or text, or stream=false)",
        )
    return AudioRequest(
        task=task,
        model=one("model") or "",
        language=language,
        prompt=one("prompt") or "",
        temperature=_temperature(one("temperature")),
        response_format=response_format,  # type: ignore[arg-type]  # checked above
        granularities=frozenset(granularities or ("segment",)),
        stream=stream,
    )


def _boolean(name: str, value: str | None) -> bool:
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise bad(name, f"{shown(value)} is not true or false")


def _temperature(value: str | None) -> float | None:
    """0 (or none): Whisper's fallback ladder from 0, as OpenAI does; above 0, that one."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise bad("temperature", f"{shown(value)} is not a number") from None
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise bad("temperature", f"{value} is outside 0 to 1")
    return number or None


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str  # as Whisper wrote it, with its leading space
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    task: str
    language: str | None  # None: nothing was heard
    duration: float
    segments: tuple[Segment, ...] = field(default=())

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


def from_whisper(index: int, segment: Any, offset: float, seek_offset: int) -> Segment:
    """A faster-whisper segment of a piece starting at `offset` s -> a Segment of the clip."""
    return Segment(
        id=index,
        seek=segment.seek + seek_offset,
        start=round(segment.start + offset, 3),
        end=round(segment.end + offset, 3),
        text=segment.text,
        tokens=tuple(segment.tokens),
        temperature=float(segment.temperature or 0.0),
        avg_logprob=float(segment.avg_logprob),
        compression_ratio=float(segment.compression_ratio),
        no_speech_prob=float(segment.no_speech_prob),
        words=tuple(
            Word(w.word.strip(), round(w.start + offset, 3), round(w.end + offset, 3))
            for w in segment.words or ()
        ),
    )


def render(transcript: Transcript, request: AudioRequest) -> str:
    """The body for `request.response_format` (its media type: MEDIA_TYPES)."""
    form = request.response_format
    if form == "json":
        return json.dumps({"text": transcript.text, "usage": usage(transcript)})
    if form == "text":
        return transcript.text + "\n"
    if form == "srt":
        return srt(transcript.segments)
    if form == "vtt":
        return vtt(transcript.segments)
    return json.dumps(verbose(transcript, request.granularities))


def usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


def verbose(transcript: Transcript, granularities: Iterable[str]) -> dict[str, Any]:
    kinds = set(granularities)
    out: dict[str, Any] = {
        "task": transcript.task,
        "language": transcript.language or "",
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "segment" in kinds:
        out["segments"] = [
            {
                "id": s.id,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in transcript.segments
        ]
    if "word" in kinds:
        out["words"] = [
            {"word": w.word, "start": w.start, "end": w.end}
            for s in transcript.segments
            for w in s.words
        ]
    out["usage"] = usage(transcript)
    return out


def timestamp(seconds: float, separator: str) -> str:
    """hh:mm:ss,mmm (SRT: `separator` ",") or hh:mm:ss.mmm (WebVTT: ".")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: Iterable[Segment]) -> list[Segment]:
    """Segments with text; a cue ends after it starts (Whisper may give both one time)."""
    return [s for s in segments if s.text.strip()]


def srt(segments: Iterable[Segment]) -> str:
    return "".join(
        f"{n}\n{timestamp(s.start, ',')} --> {timestamp(max(s.end, s.start + 0.001), ',')}\n"
        f"{_cue_text(s.text)}\n\n"
        for n, s in enumerate(_cues(segments), 1)
    )


def vtt(segments: Iterable[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{timestamp(s.start, '.')} --> {timestamp(max(s.end, s.start + 0.001), '.')}\n"
        f"{_cue_text(s.text)}\n\n"
        for s in _cues(segments)
    )


def _cue_text(text: str) -> str:
    """One line of cue text; "-->" and blank lines would end or break a cue."""
    return " ".join(text.replace("-->", "->").split())


# --------------------------------------------------------------------------- streaming


def event(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying `data` as JSON."""
    return f"data: {json.dumps(data)}\n\n".encode()


class Deltas:
    """Segment texts in -> `transcript.text.delta` events whose deltas join to the answer's
    text (stripped at both ends, as the json answer's is); `done()` the closing event."""

    def __init__(self) -> None:
        self._text = ""  # what the deltas sent so far hold
        self._pending = ""  # trailing whitespace, sent only if more text follows

    def delta(self, text: str) -> bytes | None:
        piece = self._pending + text
        if not self._text:
            piece = piece.lstrip()
        stripped = piece.rstrip()
        self._pending = piece[len(stripped) :]
        if not stripped:
            return None
        self._text += stripped
        return event({"type": "transcript.text.delta", "delta": stripped})

    def done(self, transcript: Transcript) -> bytes:
        return event(
            {"type": "transcript.text.done", "text": self._text, "usage": usage(transcript)}
        )
