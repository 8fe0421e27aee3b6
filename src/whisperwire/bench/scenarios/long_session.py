"""The long-session scenario: one long stream; lag drift and the server's RSS over time."""

from __future__ import annotations

from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import run_streams
from whisperwire.bench.corpus import OfflineReference, StreamAudio, stream_offline_text
from whisperwire.bench.progress import Progress
from whisperwire.bench.scenarios.common import lags_of, rounded, session_errors
from whisperwire.bench.servers import RssSampler, System


def run_long(
    system: System,
    stream: StreamAudio,
    offline: OfflineReference,
    interval: float,
    progress: Progress,
) -> dict[str, Any]:
    assert system.url is not None
    cpu0 = system.cpu_seconds()
    with RssSampler(system, interval) as sampler:
        (log,) = run_streams(
            system.url, [(stream.name, stream.samples)], drain_timeout=600,
            on_frame=progress.advance,
        )  # fmt: skip
    cpu1 = system.cpu_seconds()
    _, lags, ref_tokens = lags_of(log, stream, offline)
    minute = min(60.0, stream.duration / 2)
    first = [w for w in lags if w.end < minute]
    last = [w for w in lags if w.end >= stream.duration - minute]
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    return {
        "audio_s": round(stream.duration, 1),
        "clip": stream.name,
        "text": log.text,
        "wer_stream": rounded(M.wer([stream.reference or ""], [log.text]), 4),
        "wer_offline": rounded(
            M.wer([stream.reference or ""], [stream_offline_text(stream, offline)]), 4
        ),
        "latency": M.latency_block(lags, ref_tokens),
        "window_s": round(minute, 1),
        "latency_first_window": M.latency_block(first, len(first)),
        "latency_last_window": M.latency_block(last, len(last)),
        **rss_figures(sampler.samples, interval),
        "cpu_per_audio_s": rounded(cpu / stream.duration, 3) if cpu is not None else None,
        "drain_s": rounded(log.drain, 3),
        "session_errors": session_errors([log]),
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
