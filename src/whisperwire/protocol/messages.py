"""What a client sends, as typed messages, and the stream settings it can change."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# bytes per sample; mulaw and alaw: G.711 (telephony, 8 kHz)
ENCODINGS: dict[str, int] = {"s16le": 2, "f32le": 4, "mulaw": 1, "alaw": 1}
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_ID_CHARS = 256  # a clip's audio_id


class StreamConfig(BaseModel):
    """A session's effective stream settings (query parameters and `config` messages)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    sample_rate: int = Field(16000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    encoding: Literal["s16le", "f32le", "mulaw", "alaw"] = "s16le"
    language: str = "en"
    task: Literal["transcribe", "translate"] = "transcribe"
    partials: bool = True
    # deepgram, openai_realtime: set by the path
    format: Literal["json", "text", "deepgram", "openai_realtime"] = "json"

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
