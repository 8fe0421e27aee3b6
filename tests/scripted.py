"""A scripted stand-in for Whisper, and VAD probabilities, for tests without a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisperwire.endpointing import VAD_CHUNK
from whisperwire.policy import SAMPLE_RATE, DecodeRequest
from whisperwire.words import Hypothesis, Word


@dataclass
class Spoken:
    text: str
    start: float
    end: float


def script(words: list[str], start: float, per_word: float = 0.4) -> list[Spoken]:
    return [
        Spoken(f" {w}", start + i * per_word, start + (i + 1) * per_word - 0.05)
        for i, w in enumerate(words)
    ]


class FakeWhisper:
    """Returns the scripted words that lie wholly inside the window; the newest word of a
    window is misheard every other call, so only LocalAgreement keeps it out of finals."""

    def __init__(self, spoken: list[Spoken], unstable_tail: bool = True) -> None:
        self.spoken = spoken
        self.unstable_tail = unstable_tail
        self.calls = 0
        self.requests: list[DecodeRequest] = []

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        self.calls += 1
        self.requests.append(request)
        begin = request.offset
        end = begin + len(request.audio) / SAMPLE_RATE
        words = [
            Word(s.text, s.start - begin, s.end - begin, 0.9, int(s.start // 10))
            for s in self.spoken
            if s.start >= begin - 0.05 and s.end <= end
        ]
        if words and self.unstable_tail and self.calls % 2 and request.kind == "partial":
            last = words[-1]
            words[-1] = Word(last.text + "zz", last.start, last.end, 0.1, last.segment)
        return Hypothesis(words, "en")


def vad_probs(duration: float, speech: list[tuple[float, float]]) -> np.ndarray:
    n = int(duration * SAMPLE_RATE) // VAD_CHUNK
    t = (np.arange(n) * VAD_CHUNK + VAD_CHUNK / 2) / SAMPLE_RATE
    probs = np.full(n, 0.02, dtype=np.float32)
    for a, b in speech:
        probs[(t >= a) & (t < b)] = 0.95
    return probs
