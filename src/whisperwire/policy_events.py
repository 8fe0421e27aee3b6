"""What the streaming policy asks (`DecodeRequest`) and says (`Policy.events()`: text, regions,
flushes, the end)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from whisperwire.endpointing import SAMPLE_RATE
from whisperwire.words import Word


@dataclass(frozen=True)
class DecodeRequest:
    id: int
    audio: np.ndarray
    offset: float  # session time of audio[0], seconds
    prompt: str
    language: str | None  # None: detect
    task: str
    # partial: an update (greedy); commit: an update that also settles stalled words (beam);
    # final: a closed region's rest; cap: a full window
    kind: Literal["partial", "commit", "final", "cap"]
    # Committed text the window's audio starts with, to be forced as the decoder's prefix
    # (`PolicyConfig.forced_prefix`); "": decode the window freely.
    prefix: str = ""

    @property
    def end(self) -> float:
        """Session time of the window's end, seconds."""
        return self.offset + len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Partial:
    segment_id: int
    text: str
    stable: str
    start: float
    end: float
    words: tuple[Word, ...] = ()  # held and tentative, with their times and probabilities


@dataclass(frozen=True)
class Final:
    segment_id: int
    text: str
    start: float
    end: float
    language: str | None
    words: list[Word]
    speech_final: bool = False  # the last final of a region a pause ended
    from_finalize: bool = False  # the last final of a region a flush ended


@dataclass(frozen=True)
class SpeechStarted:
    """A speech region is decoded from now on; `start` is where it starts."""

    start: float


@dataclass(frozen=True)
class SpeechEnded:
    """A region's finals are all out; `last_word_end` None: it had no final words."""

    end: float
    last_word_end: float | None


@dataclass(frozen=True)
class Flushed:
    pass


@dataclass(frozen=True)
class Ended:
    duration: float
    segments: int


@dataclass(frozen=True)
class RegionMark:
    """A pause or a flush that no final marks: the region's words were all final already,
    or (a flush) no region was open."""

    at: float
    speech_final: bool
    from_finalize: bool


Event = Partial | Final | Flushed | Ended | SpeechStarted | SpeechEnded | RegionMark
