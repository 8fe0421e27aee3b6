"""Words of Whisper's hypotheses, and the comparisons the streaming policy makes on them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NORM = re.compile(r"[^\w']+")


@dataclass(frozen=True)
class Word:
    text: str  # as Whisper writes it, usually with a leading space
    start: float  # seconds
    end: float
    probability: float = 1.0
    segment: int = 0  # index of the Whisper segment it came from, within one hypothesis


@dataclass(frozen=True)
class Hypothesis:
    words: list[Word]  # times relative to the start of the request's audio
    language: str | None = None


def norm(text: str) -> str:
    """A word as compared: lower case, without punctuation or spaces."""
    return _NORM.sub("", text.lower())


def join_words(words: list[Word]) -> str:
    return "".join(w.text for w in words).strip()


def ending_by(words: list[Word], until: float) -> int:
    """How many leading words end by `until`."""
    n = 0
    while n < len(words) and words[n].end <= until:
        n += 1
    return n


def suffix_match(a: list[str], b: list[str]) -> int:
    """How many trailing words `a` and `b` share."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def common_prefix(a: list[Word], b: list[Word]) -> int:
    """How many leading words `a` and `b` share (as compared by `norm`)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if norm(x.text) != norm(y.text):
            break
        n += 1
    return n
