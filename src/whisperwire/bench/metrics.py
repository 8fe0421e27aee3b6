"""Scoring: WER after Whisper's English normaliser, word alignment, and per-word lags.

Lag of a reference word (see ``DEFINITIONS``): the reference words are the offline run's
words with their timestamps; each is "sent" when the 100 ms frame holding its end time left
the client. The streaming transcript (every ``final`` in order) is aligned to the offline
words (longest matching runs of normalised tokens); a matched word's *final lag* is the
arrival of the ``final`` that carries it minus its sent time, and its *first-seen lag* is the
arrival of the first message (``partial`` or ``final``) that showed it at that position.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

# A word is timed only if its final came within this long after its clip was sent (see
# `piecewise_word_lags`); the soak repeats a clip 15 minutes later at the soonest.
HORIZON_S = 300.0

DEFINITIONS = {
    "wer": "corpus word error rate after Whisper's English text normaliser "
    "(whisper_normalizer.english.EnglishTextNormalizer) on both sides; streaming WER "
    "scores the concatenated `final` texts of each session",
    "wer_offline": "the same model, compute type and beam size run directly through "
    "faster-whisper on each whole clip (no VAD filter, Whisper's long-form seek over 30 s)",
    "reference_word": "a word of the offline run, timed by faster-whisper's word timestamps; "
    "each word is normalised on its own (so 'don't' -> 'do', 'not'; both tokens keep the "
    "word's times)",
    "sent_time": "wall-clock time at which the client sent the 100 ms frame that holds the "
    "reference word's end time (frames are sent on a real-time wall-clock schedule)",
    "final_lag": "arrival time of the `final` message that carries the word minus its "
    "sent_time; streaming words are matched to reference words by aligning the normalised "
    "token sequences (difflib SequenceMatcher: longest matching runs in order, the earliest "
    "of equal ones), one clip of the stream at a time, with the tokens that became final "
    f"from when the clip began to be sent until {HORIZON_S:g} s after it was all sent; only "
    "matched words are timed",
    "first_seen_lag": "arrival time of the first message (`partial` or `final`) that shows "
    "the word at the position it is finally given, minus its sent_time; partial tokens are "
    "aligned to the final tokens that follow the finals already received (so a word shown, "
    "withdrawn and shown again counts from its first showing). For a server without "
    "partials it equals final_lag",
    "time_to_first_text": "from sending the first audio frame to the first message "
    "(partial or final) with any text",
    "drain": "from sending `end` to receiving the `end` message",
    "lag_slope": "least-squares slope of the final lag of every word against the word's "
    "time in its stream, all streams of a run pooled (seconds of lag per second of audio): "
    "about 0 while the server keeps up; a server at a fraction f of real time drifts at 1 - f",
    "realtime_kept": "lag_slope <= 0.05 (the server processes at least ~95 % of real time; "
    "a policy that catches up with larger windows may keep this with a high but flat lag, "
    "which the p95 figure shows) and no session failed",
    "cpu_per_audio_s": "server CPU seconds (user + system time of the server process, all "
    "threads, from psutil) during the run divided by the seconds of audio streamed",
    "rss": "resident set size of the server process, from psutil (VmRSS on Linux)",
    "cpu_share": "per scenario, the fraction of the machine's CPU time (all cores, from "
    "psutil.cpu_times) that was busy, and the shares of the server, of the benchmark client "
    "and of everything else (other work on a shared machine)",
    "hallucination_words": "normalised words in the `final` messages of a session that "
    "streams only silence or noise (partials counted separately)",
}


@lru_cache(maxsize=1)
def normalizer() -> Any:
    """Whisper's English text normaliser (one instance, made on first use)."""
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    return str(normalizer()(text))


@lru_cache(maxsize=65536)
def _word_tokens(word: str) -> tuple[str, ...]:
    return tuple(normalize(word).split())


def tokens(text: str) -> list[str]:
    """Normalised tokens, one whitespace word at a time (keeps a word -> token mapping)."""
    return [t for word in text.split() for t in _word_tokens(word)]


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus WER after Whisper's English normaliser; None when there is nothing to score."""
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    if not pairs:
        return None
    return float(jiwer.wer([r for r, _ in pairs], [h or "<empty>" for _, h in pairs]))


def align(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) with a[i] == b[j], in order: difflib's longest matching runs, the
    earliest of equally long ones (so a common word is not matched to a later repeat)."""
    matcher = SequenceMatcher(None, list(a), list(b), autojunk=False)
    return [
        (block.a + k, block.b + k)
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]


# --------------------------------------------------------------------------- timelines


@dataclass
class Timeline:
    """The streaming transcript as tokens, each with when it was final and first seen."""

    tokens: list[str]
    final_at: list[float]
    first_at: list[float]
    first_text_at: float | None  # arrival of the first message with any text

    def arrived(self, start: float, end: float) -> Timeline:
        """The tokens that became final from `start` to `end` (they arrive in that order)."""
        lo, hi = bisect_left(self.final_at, start), bisect_right(self.final_at, end)
        at = slice(lo, hi)
        return Timeline(self.tokens[at], self.final_at[at], self.first_at[at], None)


def timeline(messages: Sequence[tuple[float, dict[str, Any]]]) -> Timeline:
    final_tokens: list[str] = []
    final_at: list[float] = []
    partials: list[tuple[float, int, list[str]]] = []
    first_text_at: float | None = None
    for at, message in messages:
        kind = message.get("type")
        if kind not in ("final", "partial"):
            continue
        words = tokens(str(message.get("text") or ""))
        if words and first_text_at is None:
            first_text_at = at
        if kind == "final":
            final_tokens += words
            final_at += [at] * len(words)
        elif words:
            partials.append((at, len(final_tokens), words))
    first_at = list(final_at)
    for at, done, words in partials:
        # The partial continues the finals received so far.
        ahead = final_tokens[done : done + len(words) + 4]
        for _i, j in align(words, ahead):
            first_at[done + j] = min(first_at[done + j], at)
    return Timeline(final_tokens, final_at, first_at, first_text_at)


@dataclass(frozen=True)
class WordLag:
    token: str
    end: float  # the reference word's end, seconds of stream audio
    first: float  # first-seen lag, seconds
    final: float  # final lag, seconds


def frame_index(t: float, frame_s: float, frames: int) -> int:
    """The frame whose audio holds time `t` (a word ending at 1.0 s ends in frame 9)."""
    return min(frames - 1, max(0, math.ceil(t / frame_s - 1e-9) - 1))


def word_lags(
    reference: Sequence[tuple[str, float, float]],
    line: Timeline,
    sent_time: Callable[[float], float],
) -> tuple[list[WordLag], int]:
    """Lags of the reference words found in the streaming transcript, and the token count."""
    ref_tokens: list[str] = []
    ref_ends: list[float] = []
    for word, _start, end in reference:
        for token in _word_tokens(word):
            ref_tokens.append(token)
            ref_ends.append(end)
    lags = []
    for i, j in align(ref_tokens, line.tokens):
        sent = sent_time(ref_ends[i])
        lags.append(
            WordLag(ref_tokens[i], ref_ends[i], line.first_at[j] - sent, line.final_at[j] - sent)
        )
    return lags, len(ref_tokens)


def piecewise_word_lags(
    pieces: Sequence[Sequence[tuple[str, float, float]]],
    line: Timeline,
    sent_time: Callable[[float], float],
    horizon_s: float = HORIZON_S,
) -> tuple[list[WordLag], int]:
    """`word_lags` of a stream of pieces (clips joined), one piece at a time: a piece's
    reference words are aligned only with the tokens that became final from when its first
    word began to be sent until `horizon_s` after its last was. A stream that repeats a clip
    (the soak) is otherwise aligned across the repeat: difflib's longest run can pair one
    pass of the words with the other, timing them by the wrong pass."""
    lags: list[WordLag] = []
    total = 0
    for words in pieces:
        if not words:
            continue
        start, end = sent_time(words[0][1]), sent_time(words[-1][2]) + horizon_s
        some, n = word_lags(words, line.arrived(start, end), sent_time)
        lags += some
        total += n
    return lags, total


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, max, min, mean (None when empty), rounded to ms."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "max": r(max(values)) if values else None,
        "min": r(min(values)) if values else None,
        "mean": r(sum(values) / len(values)) if values else None,
    }


def latency_block(lags: Sequence[WordLag], reference_tokens: int) -> dict[str, Any]:
    early = sum(1 for w in lags if w.first < w.final - 1e-6)
    return {
        "first_seen": summary([w.first for w in lags]),
        "final": summary([w.final for w in lags]),
        "matched_words": len(lags),
        "reference_words": reference_tokens,
        "seen_before_final": round(early / len(lags), 3) if lags else None,
    }


def edge_windows(
    lags: Sequence[WordLag], duration: float, window_s: float
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """A long stream's first and last `window_s` (at most half of it each): the window's
    length, and the latency blocks of the words that end in each."""
    window = min(window_s, duration / 2)
    first = [w for w in lags if w.end < window]
    last = [w for w in lags if w.end >= duration - window]
    return window, latency_block(first, len(first)), latency_block(last, len(last))


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 3 points or no spread in x."""
    if len(points) < 3:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    if var <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / var


def lag_slope(lags: Sequence[WordLag]) -> float | None:
    """Least-squares slope of final lag against the word's time in its stream (s per s):
    about 0 while the server keeps up, 1 - speed when it processes slower than real time."""
    value = slope([(w.end, w.final) for w in lags])
    return None if value is None else round(value, 4)
