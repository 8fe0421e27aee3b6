"""The long-session scenario: one long stream; lag drift and the server's RSS over time."""

from __future__ import annotations

from typing import Any

from whisperwire.bench.corpus import OfflineReference, StreamAudio
from whisperwire.bench.progress import Progress
from whisperwire.bench.scenarios.common import long_stream_figures, run_sampled, session_errors
from whisperwire.bench.servers import System

WINDOW_S = 60.0  # the first and last minute, compared


def run_long(
    system: System,
    stream: StreamAudio,
    offline: OfflineReference,
    interval: float,
    progress: Progress,
) -> dict[str, Any]:
    run = run_sampled(system, [stream], interval, progress)
    _, figures = long_stream_figures(run, stream, offline, WINDOW_S)
    return {
        "audio_s": round(stream.duration, 1),
        "clip": stream.name,
        "text": run.logs[0].text,
        **figures,
        "session_errors": session_errors(run.logs),
    }
