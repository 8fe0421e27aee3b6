"""The server's Prometheus metrics: one registry of its own and every metric in it.

`Metrics` owns the registry (never prometheus_client's global one, so several servers, or
tests, in one process do not clash) and the metric objects; the rest of the server calls a
few small methods on it: a session through its `SessionMetrics`, the scheduler's workers
through `decode_done`, the server for refusals at connect. `exposition()` is what
`GET /metrics` serves. The names, and exactly what each one measures, are in README.md
("Metrics").

`FinalLag` is sans-I/O: it is given the audio time and arrival of each frame, and the time
each final was sent, so its arithmetic is tested without a clock or a socket.

`merge_expositions` joins several servers' pages into one, each series labelled with the
server it came from: what `GET /metrics` of one Ray Serve replica answers for all of them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from whisperwire.forward.metrics import PrometheusForwardMetrics
from whisperwire.protocol import events as ev
from whisperwire.protocol.codec import DIALECTS
from whisperwire.protocol.errors import ERROR_CODES

PREFIX = "whisperwire"
# What a decode job was run for: a live stream's window (see policy.DecodeRequest.kind), or
# one scheduler job of a whole clip.
STREAM_KINDS = ("partial", "commit", "final", "cap")
DECODE_KINDS = (*STREAM_KINDS, "clip")
DECODE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 60.0)


class Metrics:
    """The registry and the metrics of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.sessions_open = Gauge(
            f"{PREFIX}_sessions_open",
            "Sessions the server holds (parked ones waiting for a resume included), by the "
            "protocol they were opened with",
            ["protocol"],
            registry=reg,
        )
        self.sessions = Counter(
            f"{PREFIX}_sessions",
            "Sessions opened (refusals at connect and resumes not counted), by protocol",
            ["protocol"],
            registry=reg,
        )
        self.audio = Counter(
            f"{PREFIX}_audio_received_seconds",
            "Seconds of live PCM accepted by sessions (binary frames, at their sample rate)",
            registry=reg,
        )
        self.jobs = Counter(
            f"{PREFIX}_decode_jobs",
            "Jobs the decode workers ran (failed ones included), by kind: partial, commit, "
            "final, cap (a live stream's window) or clip (a step of a whole clip)",
            ["kind"],
            registry=reg,
        )
        self.job_seconds = Histogram(
            f"{PREFIX}_decode_duration_seconds",
            "Worker seconds of each decode job (a batch's time shared among its jobs), by kind",
            ["kind"],
            buckets=DECODE_BUCKETS,
            registry=reg,
        )
        self.queue = Gauge(
            f"{PREFIX}_scheduler_queue_depth",
            "Jobs waiting in the scheduler for a worker (not those running)",
            registry=reg,
        )
        self.rtf = Gauge(
            f"{PREFIX}_realtime_factor",
            "Worker seconds of live-stream decodes (partial, commit, final, cap) per second of "
            "live audio received, since the server started; 0 before any audio",
            registry=reg,
        )
        self.final_lag = Histogram(
            f"{PREFIX}_final_lag_seconds",
            "Finals sent to clients, each by the seconds from the arrival of the audio frame "
            "that held the end of its last word to the final's frame being written to the socket",
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Error messages written to clients (refusals at connect included), by code",
            ["code"],
            registry=reg,
        )
        self.clips = Counter(
            f"{PREFIX}_clip_requests",
            "Whole-clip (`audio`) messages received, refused ones included",
            registry=reg,
        )
        self.api_requests = Counter(
            f"{PREFIX}_api_requests",
            "Requests to the OpenAI-compatible REST API, by route (transcriptions, "
            "translations, models) and HTTP status",
            ["route", "status"],
            registry=reg,
        )
        for protocol in DIALECTS:  # every series exists from the start, at 0
            self.sessions_open.labels(protocol=protocol)
            self.sessions.labels(protocol=protocol)
        for kind in DECODE_KINDS:
            self.jobs.labels(kind=kind)
            self.job_seconds.labels(kind=kind)
        for code in sorted(ERROR_CODES):
            self.errors.labels(code=code)
        self._lock = threading.Lock()  # the workers' threads add decode seconds
        self._stream_decode_s = 0.0
        self._audio_s = 0.0
        self.rtf.set_function(self._realtime_factor)
        self._forward: PrometheusForwardMetrics | None = None

    # ---- what the server reports

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """The scheduler's queue depth, read at each scrape."""
        self.queue.set_function(depth)

    def forward(self) -> PrometheusForwardMetrics:
        """The forwarder's metrics (`whisperwire_forward_*`), in this registry; made on the
        first call, when forwarding is on."""
        if self._forward is None:
            self._forward = PrometheusForwardMetrics(self.registry, prefix=f"{PREFIX}_forward")
        return self._forward

    def session(self) -> SessionMetrics:
        return SessionMetrics(self)

    def decode_done(self, kind: str, seconds: float) -> None:
        """A worker ran a job of `kind` for `seconds` (called on the worker's thread)."""
        self.jobs.labels(kind=kind).inc()
        self.job_seconds.labels(kind=kind).observe(seconds)
        if kind in STREAM_KINDS:
            with self._lock:
                self._stream_decode_s += seconds

    def audio_received(self, seconds: float) -> None:
        self.audio.inc(seconds)
        with self._lock:
            self._audio_s += seconds

    def error_sent(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def clip_requested(self) -> None:
        self.clips.inc()

    def api_request(self, route: str, status: int) -> None:
        """A REST request to `route` was answered with `status`."""
        self.api_requests.labels(route=route, status=str(status)).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def _realtime_factor(self) -> float:
        with self._lock:
            return self._stream_decode_s / self._audio_s if self._audio_s else 0.0


class SessionMetrics:
    """What one session reports: it opens (with its protocol), receives audio, makes finals,
    sends events and closes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._protocol: str | None = None  # set while the session counts as open
        self.lag = FinalLag()

    def opened(self, protocol: str) -> None:
        if self._protocol is None:
            self._protocol = protocol
            self._metrics.sessions.labels(protocol=protocol).inc()
            self._metrics.sessions_open.labels(protocol=protocol).inc()

    def closed(self) -> None:
        if self._protocol is not None:
            self._metrics.sessions_open.labels(protocol=self._protocol).dec()
            self._protocol = None

    def audio(self, seconds: float, received_s: float, at: float, needed_from_s: float) -> None:
        """A frame of `seconds` arrived at `at`; the session has now received `received_s`
        seconds, and no final to come has a word before `needed_from_s`."""
        self._metrics.audio_received(seconds)
        self.lag.audio(received_s, at, needed_from_s)

    def final_made(self, segment_id: int, end_s: float, needed_from_s: float) -> None:
        """The policy made final `segment_id`, whose last word ends at `end_s`."""
        self.lag.final_made(segment_id, end_s, needed_from_s)

    def sent(self, event: ev.ServerEvent, at: float) -> None:
        """`event`'s frame was written to the client's socket at `at`."""
        if isinstance(event, ev.Final):
            lag = self.lag.final_sent(event.segment_id, at)
            if lag is not None:
                self._metrics.final_lag.observe(lag)
        elif isinstance(event, ev.Error):
            self._metrics.error_sent(event.code)


class FinalLag:
    """One session's final-word lag: from the arrival of the frame that held the end of a
    final's last word (audio time, seconds since the session's first sample) to the final's
    send. Holds the frames a final to come may still end in, and the finals made, not sent."""

    def __init__(self) -> None:
        self._frames: deque[tuple[float, float]] = deque()  # (audio end, arrival) per frame
        self._finals: deque[tuple[int, float]] = deque()  # (segment id, its audio's arrival)

    def audio(self, end_s: float, at: float, needed_from_s: float) -> None:
        """A frame whose audio ends at `end_s` arrived at `at`."""
        self._frames.append((end_s, at))
        self._forget_before(needed_from_s)

    def final_made(self, segment_id: int, end_s: float, needed_from_s: float) -> None:
        """Final `segment_id` ends at `end_s`: its audio came with the first frame ending at
        or after it (the last frame, for a word timed past the audio received)."""
        arrival = next((at for end, at in self._frames if end >= end_s), None)
        if arrival is None and self._frames:
            arrival = self._frames[-1][1]
        if arrival is not None:
            self._finals.append((segment_id, arrival))
        self._forget_before(needed_from_s)

    def final_sent(self, segment_id: int, at: float) -> float | None:
        """The lag of final `segment_id`, sent at `at`; None for a final not made here."""
        while self._finals and self._finals[0][0] < segment_id:  # made, never sent
            self._finals.popleft()
        if not self._finals or self._finals[0][0] != segment_id:
            return None
        return max(0.0, at - self._finals.popleft()[1])

    def _forget_before(self, needed_from_s: float) -> None:
        """Drop the frames that end before `needed_from_s` (the newest is always kept)."""
        while len(self._frames) > 1 and self._frames[0][0] < needed_from_s:
            self._frames.popleft()


def merge_expositions(pages: Mapping[str, bytes], label: str = "replica") -> bytes:
    """Prometheus text pages of several servers -> one page, every series given `label` =
    the server's name (the key of `pages`), each metric family's samples together."""
    families: dict[str, Metric] = {}
    for name, page in sorted(pages.items()):
        for family in text_string_to_metric_families(page.decode("utf-8")):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples += [
                Sample(s.name, {label: name, **s.labels}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families:
    """A collector that yields metric families as they are (for `generate_latest`)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
