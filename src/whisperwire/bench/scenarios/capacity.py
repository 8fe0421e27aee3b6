"""The capacity scenario: N concurrent real-time streams, for each N of the run."""

from __future__ import annotations

import time
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import StreamLog, run_streams
from whisperwire.bench.corpus import OfflineReference, StreamAudio, stream_offline_text
from whisperwire.bench.progress import Progress
from whisperwire.bench.scenarios.common import lags_of, rounded, session_errors
from whisperwire.bench.servers import System


def run_capacity(
    system: System,
    streams_by_n: dict[int, list[StreamAudio]],
    offline: OfflineReference,
    progress: Progress,
) -> list[dict[str, Any]]:
    """One row per N: stream i of N starts i/N seconds after stream 0."""
    assert system.url is not None
    rows = []
    for n, streams in streams_by_n.items():
        progress.phase(f"{system.name}: capacity N={n}")
        cpu0, t0 = system.cpu_seconds(), time.monotonic()
        logs = run_streams(
            system.url,
            [(s.name, s.samples) for s in streams],
            stagger_s=1.0 / n,
            drain_timeout=1200,  # a server far behind may need minutes to catch up
            on_frame=progress.advance,
        )
        cpu1, wall = system.cpu_seconds(), time.monotonic() - t0
        cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        rows.append(_row(n, logs, streams, offline, cpu, wall))
    return rows


def _row(
    n: int,
    logs: list[StreamLog],
    streams: list[StreamAudio],
    offline: OfflineReference,
    cpu: float | None,
    wall: float,
) -> dict[str, Any]:
    # Streams refused at connect (admission control) are counted, not measured.
    refused = sum(log.refused for log in logs)
    pairs = [(log, s) for log, s in zip(logs, streams, strict=True) if not log.refused]
    logs, streams = [log for log, _ in pairs], [s for _, s in pairs]
    audio_s = sum(s.duration for s in streams)
    all_lags: list[M.WordLag] = []
    ref_tokens = 0
    for log, stream in zip(logs, streams, strict=True):
        _, lags, count = lags_of(log, stream, offline)
        all_lags += lags
        ref_tokens += count
    slope = M.lag_slope(all_lags)
    errors = session_errors(logs)
    refs = [s.reference or "" for s in streams]
    return {
        "n": n,
        "admitted": n - refused,
        "refused": refused,
        "audio_s": round(audio_s, 1),
        "stream_s": [round(s.duration, 1) for s in streams],
        "wall_s": round(wall, 1),
        "latency": M.latency_block(all_lags, ref_tokens),
        "lag_slope": slope,
        "drain": M.summary([d for log in logs if (d := log.drain) is not None]),
        "realtime_kept": slope is not None and slope <= 0.05 and not errors,
        "cpu_s": rounded(cpu, 2),
        "cpu_per_audio_s": rounded(cpu / audio_s, 3) if cpu is not None and audio_s else None,
        "wer_stream": rounded(M.wer(refs, [log.text for log in logs]), 4),
        "wer_offline": rounded(M.wer(refs, [stream_offline_text(s, offline) for s in streams]), 4),
        "session_errors": errors,
    }
