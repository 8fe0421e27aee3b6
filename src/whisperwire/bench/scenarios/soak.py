"""The soak (`--scenarios soak`, not in the default run): one session of an hour of speech,
with a short session beside it every minute; the long session's lag in its first and last
ten minutes, the server's RSS over the hour, and the short sessions' lag and accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.corpus import (
    LONGFORM,
    Clip,
    OfflineReference,
    StreamAudio,
    clip_durations,
    join_clips,
    librispeech_clips,
    read_transcripts,
    stream_offline_text,
)
from whisperwire.bench.progress import Progress
from whisperwire.bench.scenarios.common import (
    lags_of,
    long_stream_figures,
    rounded,
    run_sampled,
    session_errors,
)
from whisperwire.bench.servers import System

WINDOW_S = 600.0  # the first and last ten minutes, compared


def soak_inputs(
    root: Path, seconds: float, every_s: float
) -> tuple[StreamAudio, list[StreamAudio]]:
    """The long session (the long-form files in turn, shortest first, again from the first,
    whole files until `seconds` are reached) and one short session (a test-other clip) per
    `every_s` while it runs."""
    folder = root / LONGFORM
    references = read_transcripts(folder)
    files = [Clip(name, folder / name, text) for name, text in sorted(references.items())]
    durations = clip_durations(files)
    files.sort(key=lambda c: durations[c.name])  # a short soak is one short file
    chosen: list[Clip] = []
    total = 0.0
    while total < seconds:
        clip = files[len(chosen) % len(files)]
        chosen.append(clip)
        total += durations[clip.name]
    long = join_clips(f"soak-{total / 60:.0f}min", chosen)
    shorts_order = librispeech_clips(root)
    n_short = max(0, int(long.duration // every_s) - 1)
    shorts = [
        join_clips(f"short-{i + 1}", [shorts_order[i % len(shorts_order)]]) for i in range(n_short)
    ]
    return long, shorts


def run_soak(
    system: System,
    long: StreamAudio,
    shorts: list[StreamAudio],
    offline: OfflineReference,
    every_s: float,
    interval: float,
    progress: Progress,
) -> dict[str, Any]:
    run = run_sampled(
        system, [long, *shorts], interval, progress, stagger_s=every_s, connect_late=True
    )
    lags, figures = long_stream_figures(run, long, offline, WINDOW_S)
    # Short sessions refused at connect (admission control) are counted, not measured.
    admitted = [(log, s) for log, s in zip(run.logs[1:], shorts, strict=True) if not log.refused]
    short_lags: list[M.WordLag] = []
    short_tokens = 0
    for log, short in admitted:
        _, some, tokens = lags_of(log, short, offline)
        short_lags += some
        short_tokens += tokens
    refs = [s.reference or "" for _, s in admitted]
    return {
        "audio_s": round(long.duration, 1),
        "files": [p.clip.name for p in long.pieces],
        **figures,
        "lag_slope": M.lag_slope(lags),
        "short_sessions": len(shorts),
        "short_refused": len(shorts) - len(admitted),
        "short_every_s": every_s,
        "short_latency": M.latency_block(short_lags, short_tokens),
        "short_wer_stream": rounded(M.wer(refs, [log.text for log, _ in admitted]), 4)
        if admitted
        else None,
        "short_wer_offline": rounded(
            M.wer(refs, [stream_offline_text(s, offline) for _, s in admitted]), 4
        )
        if admitted
        else None,
        "session_errors": session_errors(run.logs),
    }
