"""Sans-I/O streaming policy: audio and VAD probabilities in, decode requests and events out.

No socket, thread or model lives here. The session feeds 16 kHz samples with one Silero
speech probability per 512 samples; the policy answers with `DecodeRequest`s (a window of
audio plus a prompt), takes the resulting `Hypothesis` back through `apply`, and emits
`Partial` / `Final` events.

How text becomes final:

* **Endpointing.** A hysteresis state machine over the VAD probabilities cuts the stream
  into speech regions; audio outside them is never decoded, so silence and noise cost
  nothing and produce no text.
* **Commit.** While a region is open, the window from the last trim point to the newest
  audio is decoded every `step_s` of new audio (the session may stretch the step under
  load). Words that will not change are committed: held as the partial's `stable` prefix
  until a phrase ends (punctuation) or `max_hold_s` passes, then emitted as a `Final`, never
  revised. Which words (`commit.py`), the `commit` setting decides:
  - `"one-pass"` (the default): a word is committed after a single decode when it ends at
    least `guard_s` before the end of the audio decoded and Whisper gave it at least
    `min_probability` (or, if `max_age_s` is set, once it is that old), the idea of
    AlignAtt on CTranslate2's word times;
  - `"agreement"`: LocalAgreement-2 (Macháček et al., 2023), the longest common word prefix
    of two consecutive hypotheses.
* **Forced prefix** (`forced_prefix`): the committed words a window starts with are forced
  as the decoder's prefix, so Whisper generates only what follows them (`continuation.py`).
* **End of a region** (a pause, `flush`, `end`): one last decode of the rest of the region,
  all of whose words become final.
* **Long speech without pauses**: once the window exceeds `trim_s` it is trimmed to start
  up to `trim_context_s` before the last final word, at a phrase start (those words are
  decoded again as left context and cut at the seam), and a window never exceeds
  `max_window_s` (a forced commit at Whisper's segment boundary), so no decode goes past
  Whisper's 30 s.
* **Language** (`language` None): detected on each window until it is fixed for the region
  on enough audio; nothing is committed before (`language_choice.py`).
* **Catch-up.** Requests always cover all audio that has arrived, so a client that sends
  faster than real time (or a machine that falls behind) gets fewer, larger decodes; a
  region whose end is already known is decoded once, as a final, together with the regions
  that already follow it after short pauses (`_bridge`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from whisperwire.commit import commit_count
from whisperwire.endpointing import SAMPLE_RATE, Endpointer, Region
from whisperwire.language_choice import LanguageChoice
from whisperwire.policy_config import PolicyConfig
from whisperwire.policy_events import (
    DecodeRequest,
    Ended,
    Event,
    Final,
    Flushed,
    Partial,
    RegionMark,
    SpeechEnded,
    SpeechStarted,
)
from whisperwire.samplebuffer import SampleBuffer
from whisperwire.transcript import Transcript
from whisperwire.words import (
    Hypothesis,
    Word,
    full_window_cut,
    join_words,
    seam,
    surer_of,
    without_loop,
    without_merged_head,
    without_squeezed_tail,
)

# A backlog this long behind the start of the next region: not live (see `_bridge`).
BEHIND_S = 5.0


# --------------------------------------------------------------------------- the policy


@dataclass
class _Marker:
    at: int  # absolute sample
    kind: Literal["flush", "end"]


@dataclass
class Policy:
    config: PolicyConfig = field(default_factory=PolicyConfig)
    language: str | None = "en"  # None: detect per region
    task: str = "transcribe"

    def __post_init__(self) -> None:
        self.step_s = self.config.step_s  # new audio between partial decodes (the cadence)
        self.endpointer = Endpointer(self.config)
        self._audio = SampleBuffer()  # from the earliest sample a decode may still need
        self._total = 0  # samples received
        self._region: Region | None = None  # the region being decoded
        self._win_start = 0  # absolute sample where the decode window starts
        self._last_request_end = 0
        self.max_in_flight = 1  # partial decodes that may run at once (the session sets it)
        self._words = Transcript()  # committed: held, then final
        self._last_region_end: int | None = None
        self._tail: list[Word] = []  # previous hypothesis beyond the committed words
        cfg = self.config
        self._choice = LanguageChoice(
            cfg.language_min_s, cfg.language_probability, cfg.language_enough_s
        )  # language=None: the region's language, once detected on enough audio
        self._thorough = False  # the next update is a "commit" (words waited for the language)
        # requests in flight: id -> (end of its window, _last_request_end before it, the
        # committed word count its forced prefix continues from; -1: it leaves some out)
        self._in_flight: dict[int, tuple[int, int, int]] = {}
        self._applied_id = -1  # the newest request applied
        self._next_id = 0
        self._segment_id = 0
        self._markers: deque[_Marker] = deque()
        self._flush_marked = False  # a final said from_finalize for the next flush marker
        self._events: list[Event] = []
        self._ended = False
        self._last_partial: tuple[str, str] | None = None

    # ---- inputs

    def feed(self, samples: np.ndarray, probs: np.ndarray) -> None:
        """16 kHz samples and the VAD probabilities of every whole 512-sample chunk in them."""
        if self._ended:
            raise RuntimeError("feed() after finish()")
        self._audio.append(samples)
        self._total += len(samples)
        self.endpointer.feed(probs)
        self._discard_unneeded()

    def resume_at(self, offset_s: float, segment_id: int, finals: list[Word]) -> None:
        """Go on with a stream whose start another server decoded: its audio comes again from
        `offset_s`, the next final is numbered `segment_id`, and `finals` (its last final
        words) are what the windows are decoded after. Before any audio."""
        if self._total or self._ended:
            raise RuntimeError("resume_at() after audio")
        at = round(offset_s * SAMPLE_RATE)
        self._total = self._win_start = self._last_request_end = at
        self._audio.start_at(at)
        self.endpointer.start_at(at)
        self._segment_id = segment_id
        self._words.continue_after(finals)

    def flush(self) -> None:
        """Finalise everything received so far, as if the speaker paused."""
        self.endpointer.force_end(self._total)
        self._markers.append(_Marker(self._total, "flush"))
        self._advance()

    def finish(self) -> None:
        """End of stream: finalise everything, then emit `Ended`."""
        if self._ended:
            return
        self.endpointer.force_end(self._total)
        self._markers.append(_Marker(self._total, "end"))
        self._ended = True
        self._advance()

    def set_options(self, language: str | None, task: str) -> None:
        """Settings for audio decoded from now on (`config` message)."""
        if language != self.language:  # what was heard before is no context for what follows
            self._choice.reset()
            self._last_region_end = None
        self.language = language
        self.task = task

    # ---- outputs

    @property
    def duration(self) -> float:
        return self._total / SAMPLE_RATE

    @property
    def finished(self) -> bool:
        """finish() was called: no more audio is accepted."""
        return self._ended

    @property
    def backlog_s(self) -> float:
        """Seconds of audio received that no decode has covered yet (silence is not kept,
        so it does not count)."""
        covered = max(self._last_request_end, self._audio.start)
        return max(0, self._total - covered) / SAMPLE_RATE

    @property
    def needed_from_s(self) -> float:
        """Session time of the earliest audio a decode may still need: no final to come has
        a word before it."""
        return self._audio.start / SAMPLE_RATE

    @property
    def busy(self) -> bool:
        return bool(self._in_flight)

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_request(self) -> DecodeRequest | None:
        """The next window to decode, or None (nothing to do, or no room in flight).

        Up to `max_in_flight` partial updates may run at once (two idle workers cut the
        cadence for one stream); a region's last window and a full window's cut wait until
        nothing is in flight, as they change the window."""
        if len(self._in_flight) >= self.max_in_flight:
            return None
        self._advance()
        region = self._region
        if region is None:
            return None
        cfg = self.config
        if not self._in_flight:  # else the region's last decode may be under way
            self._bridge()
        closed = region.end is not None
        avail_end = region.end if region.end is not None else self._total
        max_window = int(cfg.max_window_s * SAMPLE_RATE)
        if (avail_end - self._win_start > max_window or closed) and self._in_flight:
            return None
        if avail_end - self._win_start > max_window:
            end, kind = self._win_start + max_window, "cap"
        elif closed:
            end, kind = avail_end, "final"
        else:
            if avail_end - self._last_request_end < int(self.step_s * SAMPLE_RATE):
                return None
            thorough = self._thorough or self._stalled(avail_end)
            end, kind = avail_end, "commit" if thorough else "partial"
        audio = self._audio.window(self._win_start, end)
        prefix, whole = self._prefix() if kind != "cap" else ("", True)
        request = DecodeRequest(
            id=self._next_id,
            audio=audio,
            offset=self._win_start / SAMPLE_RATE,
            prompt=self._words.prompt(self._win_start / SAMPLE_RATE, self.config.prompt_chars),
            language=self._language,
            task=self.task,
            kind=kind,  # type: ignore[arg-type]
            prefix=prefix,
        )
        self._next_id += 1
        continues = self._words.count if whole else -1
        self._in_flight[request.id] = (end, self._last_request_end, continues)
        self._last_request_end = end
        return request

    def release(self, request: DecodeRequest) -> None:
        """The decode of `request` gave nothing (it failed, or was refused): forget it.

        Nothing is committed and no audio is dropped: the next request covers the same audio
        again (and whatever arrived since). The caller decides when to ask for it.
        """
        if request.id not in self._in_flight:
            raise ValueError("release() for a request that is not in flight")
        _, before, _ = self._in_flight.pop(request.id)
        if request.id > self._applied_id:  # else a newer window has covered its audio
            ends = (end for end, _, _ in self._in_flight.values())
            self._last_request_end = max(ends, default=before)

    def apply(self, request: DecodeRequest, hypothesis: Hypothesis) -> None:
        """Take the decoder's answer for `request` (which must be in flight).

        An answer that comes after a newer request's is dropped: the newer window covers the
        same audio and more, and the words it gave are already applied."""
        if request.id not in self._in_flight:
            raise ValueError("apply() for a request that is not in flight")
        _, _, committed = self._in_flight.pop(request.id)
        if request.id < self._applied_id:
            self._advance()
            return
        self._applied_id = request.id
        window_end = request.end
        if committed != self._words.count:  # its prefix is not all that is committed: the
            hypothesis = replace(hypothesis, forced=0)  # words after it are cut at the seam
        new = self._new_words(hypothesis, request.offset)
        last = request.kind in ("final", "cap")
        fixing = self._choice.region is None and request.language is None and not last
        if self.language is None and not self._choice.observe(  # language=auto
            request.language, hypothesis, request.end - request.offset, last
        ):
            if last:  # decoded again, in the session's language
                self._last_request_end = self._win_start
            else:  # provisional: shown, never committed
                self._tail = new
                self._emit_partial(window_end)
        elif fixing:  # the words that waited are committed by a thorough decode in it
            self._tail, self._thorough = new, True
            self._emit_partial(window_end)
        elif request.kind == "final":
            new = surer_of(without_squeezed_tail(new), self._tail, self.config.min_probability)
            self._words.commit(new, window_end)
            ended_by, made = self._region_end_kind(), self._segment_id
            self._finalize(len(self._words.held), ended_by)
            marked = self._segment_id > made  # a final carries the mark
            if ended_by == "pause" and not marked:
                at = self._region.end / SAMPLE_RATE  # type: ignore[union-attr]
                self._events.append(RegionMark(at, speech_final=True, from_finalize=False))
            self._flush_marked = self._flush_marked or (ended_by == "flush" and marked)
            self._end_region()
        elif request.kind == "cap":
            self._commit_cap(new, window_end)
        else:
            thorough = request.kind == "commit"
            if thorough:  # the words that waited for it are committed by it
                self._thorough = False
            cfg, failed = self.config, hypothesis.failed
            agreed = commit_count(cfg, thorough, new, self._tail, window_end, failed)
            self._words.commit(new[:agreed], window_end)
            self._tail = new[agreed:]
            self._finalize(self._words.phrase_cut(window_end, self.config.max_hold_s))
            self._maybe_trim()
            self._emit_partial(window_end)
        self._advance()

    # ---- internals

    def _advance(self) -> None:
        """Pick the next region to decode and emit markers whose audio is all decoded."""
        if self._in_flight:
            return
        if self._region is None and self.endpointer.regions:
            region = self.endpointer.regions[0]
            if region.confirmed:
                self._region = region
                self._events.append(SpeechStarted(region.start / SAMPLE_RATE))
                if not self._keeps_context(region.start):
                    self._win_start = region.start
                self._win_start = max(self._win_start, self._audio.start)
                self._last_request_end = self._win_start
        done_until = self._region.start if self._region is not None else self._total
        while self._markers and self._markers[0].at <= done_until:
            marker = self._markers.popleft()
            if marker.kind == "flush":
                if not self._flush_marked:  # every flush is answered by one mark
                    at = marker.at / SAMPLE_RATE
                    self._events.append(RegionMark(at, speech_final=False, from_finalize=True))
                self._flush_marked = False
                self._events.append(Flushed())
            else:
                self._events.append(Ended(self.duration, self._segment_id))

    def _end_region(self) -> None:
        region = self._region
        assert region is not None and region.end is not None
        self.endpointer.regions.popleft()
        self._region = None
        self._tail = []
        self._choice.end_region()
        self._thorough = False
        self._last_partial = None
        self._last_region_end = region.end
        final_end = self._words.final_end
        spoke = self._words.finals and final_end * SAMPLE_RATE > region.start
        self._events.append(SpeechEnded(region.end / SAMPLE_RATE, final_end if spoke else None))
        self._discard_unneeded()

    def _bridge(self) -> None:
        """Catch-up: a closed region and the regions that already follow it after short
        pauses are decoded as one (`Endpointer.join_next`): Whisper gets full windows across
        the pauses, as offline decoding does, not a window per utterance. Only `BEHIND_S`
        behind the newest audio (a client sending faster than real time, or a server far
        behind), and never across a flush: live, nothing changes."""
        barriers = [m.at for m in self._markers]
        behind = int(BEHIND_S * SAMPLE_RATE)
        self.endpointer.join_next(self._total - behind, barriers)

    @property
    def _language(self) -> str | None:
        """The language to decode the region in (None: detect)."""
        return self.language if self.language is not None else self._choice.region

    def _region_end_kind(self) -> Literal["pause", "flush", "end"]:
        """What ended the region being finalised: a pause, or the first marker after it."""
        region = self._region
        assert region is not None and region.end is not None
        if not region.forced:
            return "pause"
        marker = next((m for m in self._markers if m.at >= region.end), None)
        return marker.kind if marker is not None else "end"

    def _keeps_context(self, at: int) -> bool:
        """Does a region starting at `at` keep the previous one in its window, as context?"""
        if self._last_region_end is None:
            return False
        gap = at - self._last_region_end
        window = at - self._win_start
        cfg = self.config
        return gap <= cfg.context_gap_s * SAMPLE_RATE and window <= cfg.trim_s * SAMPLE_RATE

    def _new_words(self, hypothesis: Hypothesis, offset: float) -> list[Word]:
        """Hypothesis words that lie beyond what is committed, in session time (a loop at
        the window's end said once). A hypothesis that continues a forced prefix of all the
        committed words in its window has them first: the rest is new."""
        words = without_loop(
            [
                Word(w.text, w.start + offset, w.end + offset, w.probability, w.segment)
                for w in hypothesis.words[hypothesis.forced :]
                if w.text.strip()
            ]
        )
        if hypothesis.forced:
            return words
        recent = self._words.recent
        return without_merged_head(words[seam(words, self._words.committed_end, recent) :], recent)

    def _stalled(self, avail_end: int) -> bool:
        """Has an unsure word held the open words back for `stall_s` (one-pass)?"""
        cfg = self.config
        if cfg.commit != "one-pass" or cfg.stall_s <= 0 or not self._tail:
            return False
        return self._tail[0].end <= avail_end / SAMPLE_RATE - cfg.guard_s - cfg.stall_s

    def _commit_cap(self, new: list[Word], window_end: float) -> None:
        """The window is full: commit through Whisper's last complete segment and move on.

        The next window starts halfway through the pause between the last committed word and
        the first one left for it: word times are Whisper's cross-attention estimates, off by
        a tenth or two, and a window that starts at a word's estimated end may clip it or the
        next. On the 13.3-min long-form file sent at once (offline WER 11.06 %): 12.21 % from
        the word's end, 12.05 % from the pause's middle (LJSpeech, 3.9 min: 5.42 -> 5.05 %)."""
        if not new:
            keep_from = window_end - 1.0  # nothing recognisable in 29 s: drop all but 1 s
        else:
            n = full_window_cut(new, window_end)
            self._words.commit(new[:n], window_end)
            keep_from = self._words.committed_end
            if n < len(new):
                keep_from = max(keep_from, (keep_from + new[n].start) / 2)
        self._tail = []
        self._finalize(len(self._words.held))
        self._win_start = max(self._win_start, int(keep_from * SAMPLE_RATE))
        self._last_request_end = self._win_start

    def _finalize(self, n: int, ended_by: Literal["pause", "flush", "end"] | None = None) -> None:
        """Emit the first `n` held words as a final; `ended_by`: they end their region."""
        if n <= 0:
            return
        words = self._words.take(n)
        text = join_words(words)
        if not text:
            return
        language = self._language
        self._events.append(
            Final(
                *(self._segment_id, text, words[0].start, words[-1].end, language, words),
                speech_final=ended_by == "pause",
                from_finalize=ended_by == "flush",
            )
        )
        self._segment_id += 1
        self._last_partial = None

    def _prefix(self) -> tuple[str, bool]:
        """The committed words the window starts with, to be forced as the decoder's prefix
        (`forced_prefix`, in a known language), up to the first unsure one; and whether that
        is all of them. Words cut by the window's start are left out."""
        if not self.config.forced_prefix or self._language is None:
            return "", False
        start = self._win_start / SAMPLE_RATE
        return self._words.prefix(start, self.config.forced_min_probability)

    def _maybe_trim(self) -> None:
        """Keep the window short: cut it at the last final word, or `trim_context_s` before
        it at a phrase start (the words there are decoded again as context, cut at the seam)."""
        length = (self._last_request_end - self._win_start) / SAMPLE_RATE
        if length <= self.config.trim_s:
            return
        # A forced prefix conditions the window on the committed words already: with context
        # words forced as well, tiny.en ended live speech with invented text and lost the rest
        # (e2e test_forced_prefix), so such a window starts at the last final word.
        span = 0.0 if self.config.forced_prefix else self.config.trim_context_s
        at = int(self._words.context_start(span) * SAMPLE_RATE)
        if at > self._win_start:
            self._win_start = at
            self._discard_unneeded()

    def _emit_partial(self, now: float) -> None:
        words = self._words.held + self._tail
        if not words:
            return
        text, stable = join_words(words), join_words(self._words.held)
        if (text, stable) == self._last_partial:
            return
        self._last_partial = (text, stable)
        start, end = words[0].start, words[-1].end
        self._events.append(Partial(self._segment_id, text, stable, start, end, tuple(words)))

    def _discard_unneeded(self) -> None:
        """Drop audio no decode will need again."""
        if self._region is not None:
            keep = self._win_start
        else:
            keep = self.endpointer.earliest_start(self._total)
            if self._keeps_context(keep):
                keep = min(keep, self._win_start)
        self._audio.discard_before(keep)
