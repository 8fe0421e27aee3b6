"""What the scenarios' results share: session errors, the server's config, word lags, and a
long stream's figures (the long session, the soak)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import StreamLog, run_streams
from whisperwire.bench.corpus import (
    OfflineReference,
    StreamAudio,
    stream_offline_text,
    stream_words,
)
from whisperwire.bench.progress import Progress
from whisperwire.bench.servers import RssSampler, System


def server_config(logs: Sequence[StreamLog]) -> dict[str, Any] | None:
    """The config the server announced in its first `ready` message."""
    for log in logs:
        if (ready := log.ready) is not None:
            return dict(ready.get("config") or {})
    return None


def session_errors(logs: Sequence[StreamLog]) -> list[str]:
    """Every session's failure and every `error` message it received, named by session."""
    out = [f"{log.name}: {log.error}" for log in logs if log.error]
    for log in logs:
        out += [f"{log.name}: {e.get('code')}: {e.get('message')}" for e in log.errors]
    return out


def lags_of(
    log: StreamLog, stream: StreamAudio, offline: OfflineReference
) -> tuple[M.Timeline, list[M.WordLag], int]:
    """A session's transcript timeline, its reference words' lags, and their token count."""
    line = M.timeline(log.messages)
    lags, ref_tokens = M.piecewise_word_lags(stream_words(stream, offline), line, log.sent_time)
    return line, lags, ref_tokens


def rounded(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


@dataclass
class SampledRun:
    """Streams run while the server's RSS and CPU time were sampled."""

    logs: list[StreamLog]
    cpu_s: float | None  # the server's CPU seconds over the run (None: not measurable)
    rss: list[tuple[float, float]]  # (seconds, MiB)
    interval: float  # between two RSS samples, seconds


def run_sampled(
    system: System,
    streams: Sequence[StreamAudio],
    interval: float,
    progress: Progress,
    **options: Any,
) -> SampledRun:
    """Run the streams (`run_streams`' `options`), sampling the server's RSS every `interval`."""
    assert system.url is not None
    cpu0 = system.cpu_seconds()
    with RssSampler(system, interval) as sampler:
        logs = run_streams(
            system.url,
            [(s.name, s.samples) for s in streams],
            drain_timeout=600,
            on_frame=progress.advance,
            **options,
        )
    cpu1 = system.cpu_seconds()
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    return SampledRun(logs, cpu, sampler.samples, interval)


def long_stream_figures(
    run: SampledRun, stream: StreamAudio, offline: OfflineReference, window_s: float
) -> tuple[list[M.WordLag], dict[str, Any]]:
    """The run's first stream, a long one: its word lags, and its figures: stream and offline
    WER, lag overall and in its first and last `window_s` (at most half of it each), the
    server's RSS and CPU time per audio second over the run, and the stream's drain."""
    log = run.logs[0]
    _, lags, ref_tokens = lags_of(log, stream, offline)
    window, first, last = M.edge_windows(lags, stream.duration, window_s)
    reference = [stream.reference or ""]
    return lags, {
        "wer_stream": rounded(M.wer(reference, [log.text]), 4),
        "wer_offline": rounded(M.wer(reference, [stream_offline_text(stream, offline)]), 4),
        "latency": M.latency_block(lags, ref_tokens),
        "window_s": round(window, 1),
        "latency_first_window": first,
        "latency_last_window": last,
        **rss_figures(run.rss, run.interval),
        "cpu_per_audio_s": rounded(run.cpu_s / stream.duration, 3)
        if run.cpu_s is not None
        else None,
        "drain_s": rounded(log.drain, 3),
    }


def rss_figures(rss: list[tuple[float, float]], interval: float) -> dict[str, Any]:
    """The RSS samples (seconds, MiB), their growth, and its trend after the first minute."""
    growth = steady = None
    if len(rss) >= 2:
        growth = round(rss[-1][1] - rss[0][1], 1)
        settle = [mb for t, mb in rss if t >= min(60.0, rss[-1][0] / 2)]
        steady = round(rss[-1][1] - settle[0], 1) if settle else None
    trend = M.slope([(t, mb) for t, mb in rss if t >= 60.0])
    return {
        "rss_mb": [[t, mb] for t, mb in rss],
        "rss_interval_s": interval,
        "rss_growth_mb": growth,
        "rss_growth_after_first_minute_mb": steady,
        "rss_slope_after_first_minute_mb_per_min": rounded(trend * 60, 2)
        if trend is not None
        else None,
        "rss_max_mb": max((mb for _, mb in rss), default=None),
    }
