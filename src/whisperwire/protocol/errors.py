"""The contract's error codes, and the exception that carries one for a refused frame."""

from __future__ import annotations

import uuid
from typing import Any

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

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.clip: str | None = None  # set for a refused `audio` message: its audio_id
        self.param = param  # the parameter at fault, where a dialect names it (OpenAI's)
        self.event_id: str | None = None  # the client's id of the refused event (OpenAI's)
