"""Words of Whisper's hypotheses, and the comparisons the streaming policy makes on them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NORM = re.compile(r"[^\w']+")
PHRASE_MARKS = ".,?!;:"  # punctuation that ends a phrase
PHRASE_END = re.compile(f"[{re.escape(PHRASE_MARKS)}]$")


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
    language_probability: float = 1.0  # Whisper's, where it detected the language
    forced: int = 0  # leading words that are the request's `prefix`, said already
    # Segments that failed Whisper's own checks (`engine.failed_checks`): a thorough decode
    # would have decoded them again at a higher temperature.
    failed: frozenset[int] = frozenset()


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


SEAM_SHIFT = 2  # words the time-placed cut between committed and new words may move
# A word the cut moves back over (so it becomes new) must end no earlier than this before the
# committed end: "with the picture with[13.42-14.14]" committed (the last word misheard), a
# later decode "the[12.92-13.04] picture,[13.04-13.44] which[14.06-14.14]" matched its
# "accord with" to the committed "with" and said "the picture" again (test-other
# 2609-156975-0004 on a jittered replay).
SEAM_BACK_S = 0.5


def seam(words: list[Word], committed_end: float, recent: list[Word]) -> int:
    """Where a hypothesis's new words begin, after the words committed until `committed_end`
    (the last of them `recent`).

    The cut is placed by time (the first word `_beyond` the committed end), then moved by
    up to `SEAM_SHIFT` words to where the hypothesis best repeats the last committed words:
    word times differ between decodes by a few tenths, which would otherwise repeat a
    committed word ("Mr. Hale, Hale") or lose a new one. A repetition the hypothesis itself
    contains ("tear down the fence, tear down the fence") survives, because the cut that
    matches the committed words lies before it. A move back over a word that ended well
    before the committed ones did (`SEAM_BACK_S`) is no drift: it is never made.
    """
    cut = next((i for i, w in enumerate(words) if _beyond(w, committed_end)), len(words))
    if not recent:
        return cut
    done = [norm(w.text) for w in recent]
    said = [norm(w.text) for w in words]
    best, best_score = cut, suffix_match(done, said[:cut])
    for k in range(max(0, cut - SEAM_SHIFT), min(len(words), cut + SEAM_SHIFT) + 1):
        if k < cut and words[k].end < committed_end - SEAM_BACK_S:
            continue  # it ended before the committed words did: not new, whatever it says
        if k > cut and words[k - 1].start > committed_end + 0.3:
            break  # beyond the seam: a new word, whatever it says
        score = suffix_match(done, said[:k])
        if score > best_score or (score == best_score and abs(k - cut) < abs(best - cut)):
            best, best_score = k, score
    return best


MERGED_MIN_CHARS = 3  # a committed word this long or longer may be found merged


def without_merged_head(words: list[Word], recent: list[Word]) -> list[Word]:
    """New words (after the seam) whose first repeats the last committed word merged with
    what follows it: only what follows. Committed "hard" (20.02-20.28 s), a later window
    decoded "hardworking" from 20.04 s, which lies mostly after the committed end and was
    kept whole: "hard hardworking" (test-other 3331-159605-0008; "box boxcar" in
    533-1066-0001 alike). The merged word starts within the first half of the committed
    one; a new word that merely begins like it ("in introducing") starts after it. A short
    committed word is left alone: "by a Allah" (2033-164914-0004), where "a" was Allah's first
    sound committed as a word, became "a llah"."""
    if not words or not recent:
        return words
    first, last = words[0], recent[-1]
    if first.start >= (last.start + last.end) / 2:
        return words
    said, done = first.text.strip(), last.text.strip().rstrip(PHRASE_MARKS)
    if len(norm(done)) < MERGED_MIN_CHARS or not said.lower().startswith(done.lower()):
        return words
    rest = said[len(done) :].lstrip("-")
    if not rest[:1].isalnum():
        return words
    head = Word(" " + rest, max(first.start, last.end), first.end, first.probability, first.segment)
    return [head, *words[1:]]


def _beyond(word: Word, committed_end: float) -> bool:
    """Does `word` lie beyond the committed end: it starts there (to a tenth), or most of it
    lies after it? A hypothesis may merge a committed word into the next one, placed from the
    committed word's start ("método de aprendizado" decoded again as "método aprendizado":
    cut by its start alone, "aprendizado" was lost)."""
    return word.start >= committed_end - 0.1 or word.start + word.end > 2 * committed_end


def confident_prefix(
    words: list[Word],
    window_end: float,
    guard_s: float,
    min_probability: float,
    max_age_s: float,
    sure_guard_s: float = 0.0,
    sure_probability: float = 1.0,
) -> int:
    """One-pass commit: the leading words that end `guard_s` before the audio decoded ends
    (`window_end`) and that Whisper gave at least `min_probability` (or, with `max_age_s` > 0,
    that are that old). Whisper revises a word when more audio follows it closely; one that
    ends well before the window's end, said with confidence, rarely changes (the idea of
    AlignAtt, with CTranslate2's word times). With `sure_guard_s` > 0, a word Whisper gave at
    least `sure_probability` needs only that guard."""
    n = 0
    for word in words:
        age = window_end - word.end
        confident = word.probability >= min_probability or 0 < max_age_s <= age
        sure = sure_guard_s > 0 and word.probability >= sure_probability
        guard = sure_guard_s if sure else guard_s
        if age < guard or not confident:
            break
        n += 1
    return n


def checked_prefix(words: list[Word], failed: frozenset[int]) -> int:
    """How many leading words come from segments that passed Whisper's checks (none of
    `failed`). A greedy partial decode has no temperature fallback, and what fails the checks
    is most often invented: "the balance of the balance of the ..." (compression ratio 9.9)
    over "the alimentary canal" in the long-form file, its first "balance" at probability
    0.98; "I'll see you soon. Bye." (mean log-probability -1.2) after the last word of a
    window."""
    n = 0
    while n < len(words) and words[n].segment not in failed:
        n += 1
    return n


def through_phrase_end(words: list[Word]) -> int:
    """How many leading words run through the last one that ends a phrase (punctuation)."""
    for i in range(len(words) - 1, -1, -1):
        if PHRASE_END.search(words[i].text.strip()):
            return i + 1
    return 0


def full_window_cut(words: list[Word], window_end: float) -> int:
    """How many of a full window's words to commit (at least one): those through Whisper's
    last complete segment, else those that end a second before the window does."""
    last_segment = words[-1].segment
    cut = [i for i, w in enumerate(words) if w.segment < last_segment]
    return max(1, cut[-1] + 1 if cut else sum(1 for w in words if w.end <= window_end - 1.0))


SQUEEZED_S = 0.02  # a word Whisper's alignment gave no more time than this (one frame)


def squeezed(word: Word) -> bool:
    """Did the alignment give `word` no time of its own (`SQUEEZED_S` at most)?"""
    return word.end - word.start <= SQUEEZED_S


SQUEEZED_MIN_WORDS = 2
SQUEEZED_MAX_PROBABILITY = 0.5


def without_squeezed_tail(words: list[Word]) -> list[Word]:
    """`words` without a run of at least two words at their end that the alignment squeezed
    into no time, said with a mean probability under one half: text Whisper made up after
    the audio ended ("And, again, we'll see you in the next video." at 8.42 s of an 8.44 s
    clip of test-other that ends with "neighbourhood"), which happens more often when the
    encoder sees 10 s of padding than 30 s (encoder_context). A region's last decode
    commits all of its words, so it drops these."""
    at = len(words)
    while at > 0 and squeezed(words[at - 1]):
        at -= 1
    tail = words[at:]
    if len(tail) < SQUEEZED_MIN_WORDS:
        return words
    if sum(w.probability for w in tail) / len(tail) >= SQUEEZED_MAX_PROBABILITY:
        return words
    return words[:at]


UNHEARD_PROBABILITY = 0.15  # under this, with no time of its own, a word was not heard


def heard_prefix(words: list[Word]) -> int:
    """How many leading words come before the first one Whisper made up: given under
    `UNHEARD_PROBABILITY` and squeezed into no time by the alignment (the two marks of
    faster-whisper's word anomaly score, `hallucination_silence_threshold`, at their
    strongest). A stalled window of test-other 2609-156975-0004, decoded thoroughly, went on
    after "contemporary Egyptian" with "Thank[0.08, 15.51-15.51 s] you for watching." over
    the speaker's "inscriptions"; the stall commits what such a decode gives up to its
    guard, so it stops before such a word (what follows waits for a later decode)."""
    for i, word in enumerate(words):
        if word.probability < UNHEARD_PROBABILITY and squeezed(word):
            return i
    return len(words)


def surer_of(last: list[Word], earlier: list[Word], min_probability: float) -> list[Word]:
    """A decode that commits all its words (a region's last), against the hypothesis before
    it (both: the words beyond those committed). Where they part, over the audio both cover,
    the earlier words are kept when the last decode gave a word there under `min_probability`
    and the earlier none: tiny.en ended a region with "of Thank[0.26] you.[0.98]" where the
    greedy decode 0.2 s before had "of steel.[0.56]" (test-other 1688-142285-0000), and the
    next window decoded "steel." again. The last decode's words after the earlier's end stay.
    Replayed (`whisperwire replay`, 2026-12-06): 100 test-other clips 14.52 % WER against
    14.57 %, the long-form file's first 234 s 12.45 % against 13.18 % (offline 13.89 / 8.48 %)."""
    n = common_prefix(earlier, last)
    theirs, ours = earlier[n:], last[n:]
    if not theirs or not ours:
        return last
    until = theirs[-1].end
    covered = [w for w in ours if w.start < until]
    if not covered or min(w.probability for w in covered) >= min_probability:
        return last
    if min(w.probability for w in theirs) < min_probability:
        return last
    return last[:n] + theirs + ours[len(covered) :]


LOOP_REPEATS = 5  # a phrase said this many times in a row is a loop
LOOP_MAX_WORDS = 4  # the longest phrase looked for


def without_loop(words: list[Word]) -> list[Word]:
    """`words` without the loops Whisper can fall into: a phrase of up to `LOOP_MAX_WORDS`
    words repeated `LOOP_REPEATS` times or more in a row is kept once ("o que é" about a
    hundred times, piled up at the end of a 1 s window; "yolks of four eggs, 1 1 1 ... 1 one
    wine glass" eighteen times in the middle of a live window of the long-form file, where
    the partial decodes run without the temperature fallback). Shorter runs ("tear down the
    fence, tear down the fence") are speech and stay."""
    said = [norm(w.text) for w in words]
    kept: list[Word] = []
    i = 0
    while i < len(words):
        for n in range(1, LOOP_MAX_WORDS + 1):
            phrase, repeats = said[i : i + n], 1
            while len(phrase) == n and said[i + repeats * n : i + (repeats + 1) * n] == phrase:
                repeats += 1
            if repeats >= LOOP_REPEATS:
                kept += words[i : i + n]
                i += repeats * n
                break
        else:
            kept.append(words[i])
            i += 1
    return kept
