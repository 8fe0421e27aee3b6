"""What the decode workers can carry: the cadence live streams share, and admission.

Sans-I/O: decode times come in (`record`), decisions go out (`step`, `admit_stream`,
`status`); the clock is passed in, so all of it is tested without threads or a model.

The model, in worker-seconds per second:

* The workers give ``W`` of them; ``target`` of that is planned, the rest absorbs final
  decodes and jitter.
* A live stream costs ``t_p / step``: one partial decode (``t_p``, a moving average of the
  partial decodes measured) every ``step`` seconds of its audio.
* A clip being transcribed takes its turn with the streams in the scheduler's round-robin:
  one window (about a final decode, ``t_f``) per round. The session that sent it counts as
  its clips, not also as a live stream, until it streams audio again.
* **Cadence**: while there are no more streams and clips than workers, each has a worker
  and decodes at the policy's base step (0.5 s). Workers beyond that are not left idle: a
  stream may have ``parallel = min(max_parallel, W // (streams + clips))`` partial decodes
  running at once, at ``base / parallel`` apart, so one stream on two workers gets an update
  every 0.25 s where one worker gives one about every decode time. Where the engine has a
  solo decoder on all the cores (`solo`), a lone stream or clip runs one decode at a time on
  it instead: each finishes sooner, and no decode of it waits in the queue with a snapshot of
  audio taken while the one before ran. With more, every live stream
  gets the same step, the smallest at or above the base step in which a round of the workers
  fits: ``step = max(base, (n * t_p + clips * t_f) / (W * target))``; it returns to the base
  step as they leave.
* A word's final lag is at worst about ``k * step + guard + t_p + t_f``: it waits for the
  ``k`` decodes that commit it (LocalAgreement-2: two that agree; one-pass: one, once the word
  is ``guard`` seconds old), the last of which takes ``t_p``, and at a pause for the region's
  final decode (``t_f``). Measured on 2 cores with LocalAgreement-2 (k = 2), this is the
  final lag's p95 within 20 %. **Admission**: a new live stream is refused when the step it
  would force exceeds ``(max_lag - guard - t_p - t_f) / k``, so the streams already admitted
  keep their lag. A stream that finds a worker free is always admitted: it slows no admitted
  stream past the base step, and it is the best the machine can do for it, however slow the
  decodes are (the first stream is the case of one worker). Without this floor a second
  stream on two workers was let in or refused from run to run as the moving average of the
  final decodes crossed the bound (2026-12-04 bench).
* **Before a decode is measured** ``t_p`` and ``t_f`` are ``UNMEASURED`` times the prior, the
  warm-up's decode of 10 s of silence: a window of speech costs more. On 2 cores (tiny.en,
  2026-12-05) the prior, then a second of silence, was 0.39 s, and a 10 s window of speech
  with both workers busy 0.57 s greedy and 0.69 s with beam 5 (1.5x and 1.8x). Taken at face
  value, the prior let 4 of 14 streams opened at once into a fresh server, held at a
  final-lag p95 of 3.35 s and 1.46x the offline WER; with measured times 2 are let in, at
  2.4-2.7 s. With live windows encoded short (`--encoder-pad 10`, `encoder_context`) a second
  of silence decodes in 0.10 s and 10 s of speech in 0.40 s greedy, 0.44 s with beam 5 (both
  workers busy, 2026-12-06): so the prior is 10 s of silence, 0.28-0.31 s there; with
  Whisper's 30 s (the default) it costs what a second does (0.43-0.57 s against 0.53-0.60 s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]
UNMEASURED = 2.0  # a window of speech against the warm-up's second of silence, at most


@dataclass
class _Average:
    """Exponentially weighted moving average; `value` until the first sample: the prior."""

    value: float
    weight: float = 0.2
    samples: int = 0

    def add(self, x: float) -> None:
        self.value = x if self.samples == 0 else self.value + self.weight * (x - self.value)
        self.samples += 1


@dataclass
class LoadMonitor:
    workers: int
    base_step_s: float  # the policy's step when the machine is not busy
    max_lag_s: float  # the final-word lag admitted streams are kept under
    clock: Clock
    prior_decode_s: float = 0.25  # the warm-up's decode of silence (x UNMEASURED until measured)
    decodes_per_commit: int = 2  # k: decodes a word waits for (agreement 2, one-pass 1)
    commit_guard_s: float = 0.0  # one-pass: how old a word must be before it is committed
    target: float = 0.85  # share of the workers' time planned for streams and clips
    max_parallel: int = 2  # partial decodes of one stream that may run at once on idle workers
    solo: bool = False  # a lone session's decodes run one at a time on all the cores
    idle_s: float = 10.0  # a stream neither heard from nor decoded for this long costs nothing
    _partial: _Average = field(init=False)
    _final: _Average = field(init=False)
    _streams: dict[str, float] = field(init=False, default_factory=dict)  # id -> last activity
    _clip_sessions: set[str] = field(init=False, default_factory=set)  # sent clips, no audio since
    _clips: int = field(init=False, default=0)
    refused: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._partial = _Average(UNMEASURED * self.prior_decode_s)
        self._final = _Average(UNMEASURED * self.prior_decode_s)

    # ---- inputs

    def record(self, kind: str, seconds: float) -> None:
        """A decode of `kind` ("partial"; or thorough: "commit", "final", "cap") took
        `seconds` of a worker."""
        (self._partial if kind == "partial" else self._final).add(seconds)

    def stream_opened(self, key: str) -> None:
        self._streams[key] = self.clock()

    def stream_audio(self, key: str) -> None:
        if key in self._streams:
            self._streams[key] = self.clock()
            self._clip_sessions.discard(key)

    def stream_decoded(self, key: str) -> None:
        """A decode of the stream's audio ran: a stream still working through audio sent
        earlier (a file sent faster than real time) takes the workers' time, so it counts as
        live however long ago its last audio came."""
        if key in self._streams:
            self._streams[key] = self.clock()

    def stream_closed(self, key: str) -> None:
        self._streams.pop(key, None)
        self._clip_sessions.discard(key)

    def clip_started(self, key: str | None = None) -> None:
        """A clip is being transcribed; `key`, the session that sent it, counts as its clips
        and no longer as a live stream until it sends streamed audio again."""
        self._clips += 1
        if key is not None and key in self._streams:
            self._clip_sessions.add(key)

    def clip_finished(self) -> None:
        self._clips = max(0, self._clips - 1)

    # ---- decisions

    @property
    def live_streams(self) -> int:
        now = self.clock()
        return sum(
            1
            for key, last in self._streams.items()
            if now - last <= self.idle_s and key not in self._clip_sessions
        )

    @property
    def max_step_s(self) -> float:
        """The longest step that keeps a word's final lag under `max_lag_s`."""
        fixed = self.commit_guard_s + self._partial.value + self._final.value
        return (self.max_lag_s - fixed) / self.decodes_per_commit

    def parallel(self, streams: int | None = None) -> int:
        """Partial decodes one live stream may have running at once: more than one only while
        the workers outnumber the streams and clips."""
        n = self.live_streams if streams is None else streams
        if self.solo and n + self._clips <= 1:
            return 1
        return max(1, min(self.max_parallel, self.workers // max(1, n + self._clips)))

    def step(self, streams: int | None = None) -> float:
        """The step `streams` live streams (default: those now) share."""
        n = self.live_streams if streams is None else streams
        if n + self._clips <= self.workers:  # a worker each: decodes never wait for another
            return self.base_step_s / self.parallel(n)
        work = n * self._partial.value + self._clips * self._final.value  # one round
        return max(self.base_step_s, work / (self.workers * self.target))

    def admit_stream(self) -> bool:
        """Can one more live stream come in without pushing the admitted ones past
        `max_lag_s`? Counts the refusals."""
        ok = self._carries(self.live_streams + 1)
        if not ok:
            self.refused += 1
        return ok

    def room(self, limit: int) -> int:
        """Live streams `admit_stream` would let in now, one after another (at most `limit`):
        what a replica reports to the router that spreads sessions over replicas."""
        live = self.live_streams
        more = 0
        while more < limit and self._carries(live + more + 1):
            more += 1
        return more

    def _carries(self, streams: int) -> bool:
        """Whether `streams` live streams keep within `max_lag_s` (or find a worker each)."""
        return streams <= self._free_floor() or self.step(streams) <= self.max_step_s

    def capacity(self) -> int:
        """Live streams the workers carry within `max_lag_s` at the measured decode times
        (at least one per worker the clips leave free, and at least one)."""
        if self.max_step_s < self.base_step_s:
            return self._free_floor()
        budget = self.max_step_s * self.workers * self.target - self._clips * self._final.value
        return max(self._free_floor(), int(budget / self._partial.value))

    def _free_floor(self) -> int:
        """Live streams admitted whatever the decode times: one per worker the clips leave
        free, and the first stream always."""
        return max(1, self.workers - self._clips)

    def retry_after_s(self) -> float:
        """When a refused client may try again: about one stream's worth of time."""
        return round(max(1.0, min(30.0, 2 * self.max_lag_s)), 1)

    def status(self) -> dict[str, Any]:
        live, capacity = self.live_streams, self.capacity()
        return {
            "workers": self.workers,
            "solo": self.solo,
            "live_streams": live,
            "clips": self._clips,
            "capacity": capacity,
            "headroom": max(0, capacity - live),
            "step_s": round(self.step(live), 3),
            "parallel": self.parallel(live),
            "max_lag_s": round(self.max_lag_s, 3),
            "decode_s": {
                "partial": round(self._partial.value, 3),
                "final": round(self._final.value, 3),
            },
            "refused": self.refused,
        }
