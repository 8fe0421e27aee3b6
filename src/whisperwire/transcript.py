"""A live session's committed words: held until they become final, then kept as context.

Plain state for the streaming policy (`policy.py`): no events, no audio. A committed word
never changes; it is held (the partial's `stable` prefix) until a phrase ends or it has been
held long enough, then taken for a `Final`. The newest final words stay, for the text the
next window is decoded after (`prompt`, `prefix`) and for where its words begin (`seam`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from whisperwire.words import PHRASE_END, PHRASE_MARKS, Word, join_words, through_phrase_end


@dataclass
class Transcript:
    held: list[Word] = field(default_factory=list)  # committed, not yet final
    held_since: float = 0.0  # window end (seconds) when the first held word was committed
    committed_end: float = 0.0  # seconds: end of the last committed word
    count: int = 0  # words ever committed
    recent: list[Word] = field(default_factory=list)  # the last committed words (8)
    finals: deque[Word] = field(default_factory=lambda: deque(maxlen=200))  # recent finals
    final_end: float = 0.0  # seconds: end of the last final word

    def commit(self, words: list[Word], now: float) -> None:
        """Words that will never change, committed by the decode of audio up to `now`.

        Their times never go back: timestamps of separate decodes differ by a few hundredths,
        so a word may be placed slightly before the end of the previous committed one.
        """
        if words and not self.held:
            self.held_since = now
        for word in words:
            start = max(word.start, self.committed_end)
            word = replace(word, start=start, end=max(word.end, start))
            self.held.append(word)
            self.recent = (self.recent + [word])[-8:]
            self.committed_end = word.end
            self.count += 1

    def continue_after(self, finals: list[Word]) -> None:
        """Go on from the final words of a stream taken over mid-way (another server's): the
        context the next windows are decoded after, and where their new words begin."""
        if self.count:
            raise ValueError("continue_after() once words are committed")
        self.finals.extend(finals)
        self.recent = list(finals[-8:])
        self.count = len(finals)
        if finals:
            self.final_end = self.committed_end = finals[-1].end

    def phrase_cut(self, now: float, max_hold_s: float) -> int:
        """How many held words become final: all once held `max_hold_s`, else to a phrase end."""
        if now - self.held_since >= max_hold_s:
            return len(self.held)
        return through_phrase_end(self.held)

    def take(self, n: int) -> list[Word]:
        """The first `n` held words, final from now on."""
        words, self.held = self.held[:n], self.held[n:]
        if join_words(words):
            self.finals.extend(words)
            self.final_end = words[-1].end
        return words

    def prompt(self, start: float, limit: int) -> str:
        """The last `limit` characters of final text before `start` (seconds)."""
        words = [w for w in self.finals if w.end <= start + 0.05]
        return join_words(words)[-limit:].strip() if limit > 0 else ""

    def prefix(self, start: float, min_probability: float = 0.0) -> tuple[str, bool]:
        """The committed words from `start` (seconds) on, up to the first that Whisper gave
        less than `min_probability`: a window's forced prefix, and whether it holds all of
        them. A word cut by the window's start is left out. The punctuation after the last
        word is not forced: a full stop committed at a pause ("ask not.") made Whisper begin
        a sentence ("Watch your comments") where the speaker went on ("what your country")."""
        words = [w for w in (*self.finals, *self.held) if w.start >= start - 0.02]
        sure = next((i for i, w in enumerate(words) if w.probability < min_probability), None)
        text = join_words(words if sure is None else words[:sure])
        return text.rstrip(PHRASE_MARKS + "…"), sure is None

    def context_start(self, span_s: float) -> float:
        """Where a trimmed window may start (seconds) to keep up to `span_s` of the final
        words before `final_end` as context: before the first of them that begins a phrase,
        else before the first of them; `final_end` when none fits (or `span_s` is 0). The cut
        lies halfway through the gap before that word, so none of it is cut off."""
        if span_s <= 0:
            return self.final_end
        words = list(self.finals)
        inside = [i for i, w in enumerate(words) if w.start >= self.final_end - span_s]
        if not inside:
            return self.final_end
        starts = [i for i in inside if i > 0 and PHRASE_END.search(words[i - 1].text.strip())]
        i = (starts or inside)[0]
        before = words[i - 1].end if i > 0 else words[i].start
        return (min(before, words[i].start) + words[i].start) / 2
