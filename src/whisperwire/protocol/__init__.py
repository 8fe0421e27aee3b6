"""The protocol layer: client frames -> typed messages, typed events -> frames, per dialect.

`messages` (what clients send), `events` (what the server sends), `errors` (the contract's
codes), `codec` (one session's parsing state), and one module per dialect: `native`
(`format=json`) and `whispercpp` (`format=text`).
"""

from whisperwire.protocol.codec import DIALECTS, Codec
from whisperwire.protocol.dialect import Clock, Dialect, utc_now
from whisperwire.protocol.errors import (
    AUDIO_DECODE_ERROR,
    BAD_AUDIO_FRAME,
    BASE64_DECODE_ERROR,
    ERROR_CODES,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_JSON,
    INVALID_MESSAGE,
    MESSAGE_TOO_BIG,
    OVERLOADED,
    RESUME_FAILED,
    SESSION_TIMEOUT,
    TRANSCRIPTION_ERROR,
    UNAUTHORIZED,
    UNKNOWN_MESSAGE_TYPE,
    UNSUPPORTED_FORMAT,
    ProtocolError,
    incident,
    shown,
)
from whisperwire.protocol.messages import (
    ENCODINGS,
    MAX_ID_CHARS,
    AudioFrame,
    ClientMessage,
    ClipAudio,
    Config,
    End,
    Flush,
    Ping,
    Status,
    StreamConfig,
)

__all__ = [
    "AUDIO_DECODE_ERROR",
    "BAD_AUDIO_FRAME",
    "BASE64_DECODE_ERROR",
    "DIALECTS",
    "ENCODINGS",
    "ERROR_CODES",
    "IDLE_TIMEOUT",
    "INTERNAL_ERROR",
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "MAX_ID_CHARS",
    "MESSAGE_TOO_BIG",
    "OVERLOADED",
    "RESUME_FAILED",
    "SESSION_TIMEOUT",
    "TRANSCRIPTION_ERROR",
    "UNAUTHORIZED",
    "UNKNOWN_MESSAGE_TYPE",
    "UNSUPPORTED_FORMAT",
    "AudioFrame",
    "ClientMessage",
    "ClipAudio",
    "Clock",
    "Codec",
    "Config",
    "Dialect",
    "End",
    "Flush",
    "Ping",
    "ProtocolError",
    "Status",
    "StreamConfig",
    "incident",
    "shown",
    "utc_now",
]
