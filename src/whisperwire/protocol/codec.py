"""Sans-I/O protocol codec: one session's frames in, typed messages out; events out, frames.

Nothing here touches a socket, a thread or a model. A `Codec` holds one session's protocol
state (its effective stream settings and whether audio has started) so that it can validate
each frame against them, exactly as `websockets`' and `h11`'s protocol objects do. The
session's `format` picks its dialect: how its text frames are read, how events are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from whisperwire.protocol import deepgram, native, openai_realtime, whispercpp
from whisperwire.protocol.dialect import Clock, Dialect, utc_now
from whisperwire.protocol.errors import (
    BAD_AUDIO_FRAME,
    INVALID_MESSAGE,
    MESSAGE_TOO_BIG,
    UNSUPPORTED_FORMAT,
    ProtocolError,
    shown,
)
from whisperwire.protocol.events import ServerEvent
from whisperwire.protocol.messages import (
    CONFIG_KEYS,
    ENCODINGS,
    MAX_ID_CHARS,
    AudioFrame,
    ClientMessage,
    ClipAudio,
    Config,
    StreamConfig,
)

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (native.DIALECT, whispercpp.DIALECT, deepgram.DIALECT, openai_realtime.DIALECT)
}


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
    clock: Clock = utc_now  # stamps the events this session sends
    session_id: str = ""  # named by dialects that name it (Deepgram's request_id)
    model: str = ""
    listen: deepgram.Listen | None = None  # a Deepgram client's options (format=deepgram)
    realtime: openai_realtime.Realtime | None = None  # an OpenAI Realtime session's state

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.config.format]

    # ---- parsing

    def apply_query(self, params: dict[str, str]) -> None:
        """Apply connection query parameters; raises ProtocolError(INVALID_MESSAGE)."""
        if params.get("format") == "deepgram":  # its own query parameters, as native ones
            self.listen = deepgram.parse_query(params)
            params = self.listen.query()
        elif params.get("format") == openai_realtime.FORMAT:  # its settings come by events
            self.realtime = openai_realtime.Realtime(session_id=f"sess_{self.session_id}")
            params = openai_realtime.query(params)
        known = {k: v for k, v in params.items() if k in StreamConfig.model_fields}
        if known:
            self.config = self._validated(known)

    def receive_binary(self, data: bytes) -> AudioFrame:
        if len(data) > self.max_message_bytes:
            raise ProtocolError(MESSAGE_TOO_BIG, self._too_big(len(data)))
        if self.realtime is not None:  # its commits count the audio appended
            raise ProtocolError(
                INVALID_MESSAGE,
                "OpenAI's Realtime API takes no binary frames: send the audio as base64 in "
                "input_audio_buffer.append events; frame ignored",
            )
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
        return self.dialect.read(text, self)

    def configure(self, changes: dict[str, Any]) -> Config:
        """A `config` message's fields (its `type` removed): validated, then applied."""
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

    def clip(self, obj: dict[str, Any]) -> ClipAudio:
        """An `audio` message; a refusal carries the clip's audio_id (`clip`, "" if none)."""
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

    def frames(self, event: ServerEvent) -> list[str]:
        """Server event -> the text frames the session's dialect sends for it (often one)."""
        if self.dialect.encode_many is not None:
            return self.dialect.encode_many(event, self)
        frame = self.encode(event)
        return [] if frame is None else [frame]

    def encode(self, event: ServerEvent) -> str | None:
        """Server event -> text frame in the session's dialect, or None if it drops it (for
        a dialect that may send several, only errors: use `frames`)."""
        dialect = self.dialect
        if dialect.encode_in is not None:
            return dialect.encode_in(event, self)
        return dialect.encode(event, self.clock)
