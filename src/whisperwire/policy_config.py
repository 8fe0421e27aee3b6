"""The streaming policy's configuration: every knob of endpointing and commit, with its default
and, where one was chosen by measurement, the figures behind it.

Plain data, no dependencies: the policy (`policy.py`) and endpointing (`endpointing.py`) read
it; the `serve` settings (`settings.py`) take the defaults of the knobs they expose from it and
build it by field name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class PolicyConfig:
    """The policy's knobs; `serve` exposes some of them as flags (settings.StreamingOptions)."""

    vad_threshold: float = 0.5
    vad_neg_offset: float = 0.15  # hysteresis: speech ends below threshold - offset
    min_speech_s: float = 0.25  # shorter blips are ignored
    min_silence_s: float = 0.5  # a pause this long ends a region
    speech_pad_s: float = 0.4  # audio kept before a region (Silero fires late on soft onsets)
    end_pad_s: float = 0.3  # audio kept after a region
    context_gap_s: float = 2.0  # after a pause this short, the last region stays as context
    step_s: float = 0.5  # new audio between two partial decodes
    # Trim the window beyond this length: at the last final word, or `trim_context_s` before
    # it. Seconds of final words a trimmed window keeps before its new audio, from a phrase
    # start (0: none). A window cut at the last final word starts mid-sentence with no left
    # context (2-3 s of audio), and tiny.en mangled what came first ("cried to the the thee"
    # for "cried to the eunuch and said to him woe to thee"). Chosen by `whisperwire replay`
    # (virtual clock: the same transcript on every run), WER on 100 test-other clips / the
    # long-form file's first 234 s / all 13.3 min (offline 13.6 / 8.6 / 12.0 %), final lag
    # p50 / p95 on the clips: trim 15 s, no context (the earlier default) 14.8 / 16.1 / 17.9 %,
    # 1.89 / 2.66 s; context 5 s 14.5 / 12.5 / 15.5 %, 1.89 / 2.67 s; context 5 s and trim
    # 10 s 14.2 / 12.0 / 15.6 %, 1.87 / 2.49 s. On 234 s: context 3 s 12.9 %, 10 s 13.8 %;
    # with trim 10 s: context 7 s 13.6 %, trim 8 s 13.4 %.
    trim_s: float = 10.0
    trim_context_s: float = 5.0
    # Never decode more than this (Whisper's window is 30 s). Measured on the 13.3-min
    # long-form file sent at once (offline WER 11.0 %), where a backlog is decoded in windows
    # of this length: 20 s 14.1 %, 25 s 12.3 %, 27 s 13.0 %, 29 s 11.5 %, 30 s 11.7 %.
    max_window_s: float = 29.0
    max_hold_s: float = 0.0  # committed words may wait this long for a phrase end
    # How a partial decode's words become final: "agreement" (LocalAgreement-2: two
    # consecutive decodes agree) or "one-pass" (one decode, when a word ends `guard_s` before
    # the audio decoded ends with at least `min_probability`).
    # Measured (20 test-other clips, 1 worker; offline WER 9.1 %): agreement 12.8 % WER,
    # final lag p50/p95 0.99/1.60 s; one-pass, guard 0.6 s, probability 0.3: 10.5 %,
    # 1.30/2.73 s (guard 1.0: 10.2 %, 1.67/2.88 s; probability 0.5: 10.5 %, 1.37/4.43 s).
    # The guard is 0.8 s since the stall (below) is on: see there.
    commit: Literal["agreement", "one-pass"] = "one-pass"
    guard_s: float = 0.8
    min_probability: float = 0.3
    # One-pass: a word this old is committed whatever its probability; 0: never. Off: at
    # 2.0 s it cut the p95 lag to 2.29 s but raised WER from 10.2 % to 13.0 %.
    max_age_s: float = 0.0
    # One-pass: a word Whisper gave at least `sure_probability` is committed `sure_guard_s`
    # before the end of the audio decoded instead of `guard_s`; 0: off. Replayed (README):
    # 0.5 s at 0.9 gave 100 clips 14.31 % against 14.20 % and the 13.3-min file 15.15 % against
    # 15.51 %, clips' final lag p50 1.71 s against 1.87 s; live on 30 clips 13.4 % against
    # 13.7 %, p50 1.27 s against 1.46 s.
    sure_guard_s: float = 0.5
    sure_probability: float = 0.9
    # One-pass: when an unsure word has held back the words after it for this long (it
    # ended `guard_s` + `stall_s` before the newest audio), the next decode is a thorough one
    # (beam search, fallback) whose words are all committed up to `guard_s` before its end,
    # whatever their probability (but none from a word it made up: `words.heard_prefix`), as
    # a region's last decode commits all of its words; 0: off.
    # On 234 s of continuous speech (offline WER 8.6 %), 1.0 s cut the final lag p95 from
    # 4.49 to 2.30 s but, with guard 0.6 s, raised WER from 14.3 % to 16.8 % (with guard
    # 0.8 s: 13.8 %, p50 / p95 1.62 / 2.68 s). Guard 0.8 s alone: 12.7 %, 1.72 / 3.79 s;
    # 1.0 s: 12.2 %, 1.84 / 4.61 s; guard 0.6 s, no stall: 13.6-14.3 % over three runs,
    # 1.43-1.45 / 3.6-4.5 s.
    # Stall 1.0 s with guard 0.8 s against guard 0.6 s without (the earlier default), each pair
    # in one run (offline: 100 clips 13.8 %, 234 s 10.5 %): two workers, 100 clips 15.2 / 14.8 %
    # WER, final lag p50 / p95 2.13 / 3.10 s against 1.99 / 4.62 s; 234 s 15.4 / 15.7 %; live
    # streams' p95 lower at 1, 2, 3 and 5 streams (4.07 / 6.49 s at one). One worker: 100 clips
    # 15.7 / 15.6 %, 1.60 / 2.21 s against 1.77 / 4.60 s; 234 s 15.0 / 15.0 %. Even on accuracy
    # within the runs' noise, a quarter to a half off the p95, 0.1-0.2 s on the p50.
    stall_s: float = 1.0
    # One-pass: words of a partial decode's segment that failed Whisper's checks (compression
    # ratio over 2.4, or mean log-probability under -1.0: a thorough decode would be redone
    # at a higher temperature) are committed as the others are; False: none of them, nor any
    # word after them (`words.checked_prefix`); they wait for a decode that passes. About 4 %
    # of the partial decodes of the long-form file's first 300 s fail (11 of 260). Replayed
    # (`whisperwire replay`, 2026-12-06): the 13.3-min file 14.62 -> 14.52 % (offline 11.11 %;
    # one clip's "krayfish are where there is"), 100 clips (`--cost-scale 0.5 --cost-jitter
    # 0.3 --seed 1`) 14.78 % either way.
    commit_failed_segments: bool = False
    # Finals' text given as prompt; 0: none. Off by default: on the 13.3-min long-form file
    # a prompt of earlier finals made tiny.en end regions with "Thank you for watching!" and
    # the like (first 200 s: WER 24.0 % with a 200-character prompt, 12.6 % without).
    prompt_chars: int = 0
    # The committed words a window starts with are forced as the decoder's prefix: Whisper
    # generates only what follows them, conditioned on them (`continuation.py`). The
    # long-form file in real time (offline 10.5-10.9 %): 234 s 14.1 % -> 11.8 % WER, 13.3 min
    # 15.6 % -> 14.7 %, final lag alike; 20 clips 10.8 % either way. Off: a word committed
    # wrongly is forced too, and what follows it suffers (jfk in real time: "so am I fellow
    # Americans. ... What you country", WER 0.14-0.18 against 0.09 decoded freely); the
    # cause was the full stop after "ask not", which is no longer forced (transcript.py):
    # jfk then gives 0.09 with the prefix too. A second run of 234 s gave 12.7 % off, 12.5 %
    # on (12.3 % with forced_min_probability 0.6): within the runs' noise, so it stays off.
    forced_prefix: bool = False
    # Forced prefix: it stops before the first committed word Whisper gave less than this
    # probability; the words from there on are decoded freely and cut at the seam.
    forced_min_probability: float = 0.0
    # Language detection (`language=auto`, see language_choice.py): a region's language is
    # fixed by the first decode of at least `language_min_s` of audio that detects it with
    # probability `language_probability`, or of at least `language_enough_s` whatever the
    # probability. On 40 FLEURS clips (de, fr, es, pt) the `base` model detected a wrong one on
    # 1-2 s (mostly "en", p 0.4-0.6; once p 0.78), every one right on 6 s (p 0.86-1.0).
    language_min_s: float = 2.0
    language_probability: float = 0.9
    language_enough_s: float = 6.0
