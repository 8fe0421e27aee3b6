"""The soak (`--scenarios soak`, not in the default run): one session of an hour of speech,
with a short session beside it every minute; the long session's lag in its first and last
ten minutes, the server's RSS over the hour, and the short sessions' lag and accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import run_streams
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
from whisperwire.bench.scenarios.common import lags_of, rounded, session_errors
from whisperwire.bench.scenarios.long_session import rss_figures
from whisperwire.bench.servers import RssSampler, System

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
    assert system.url is not None
    cpu0 = system.cpu_seconds()
    streams = [(long.name, long.samples)] + [(s.name, s.samples) for s in shorts]
    with RssSampler(system, interval) as sampler:
        logs = run_streams(
            system.url,
            streams,
            stagger_s=every_s,
            drain_timeout=600,
            on_frame=progress.advance,
            connect_late=True,
        )
    cpu1 = system.cpu_seconds()
    _, lags, ref_tokens = lags_of(logs[0], long, offline)
    window = min(WINDOW_S, long.duration / 2)
    first = [w for w in lags if w.end < window]
    last = [w for w in lags if w.end >= long.duration - window]
    # Short sessions refused at connect (admission control) are counted, not measured.
    admitted = [(log, s) for log, s in zip(logs[1:], shorts, strict=True) if not log.refused]
    short_lags: list[M.WordLag] = []
    short_tokens = 0
    for log, short in admitted:
        _, some, tokens = lags_of(log, short, offline)
        short_lags += some
        short_tokens += tokens
    refs = [s.reference or "" for _, s in admitted]
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    return {
        "audio_s": round(long.duration, 1),
        "files": [p.clip.name for p in long.pieces],
        "wer_stream": rounded(M.wer([long.reference or ""], [logs[0].text]), 4),
        "wer_offline": rounded(
            M.wer([long.reference or ""], [stream_offline_text(long, offline)]), 4
        ),
        "latency": M.latency_block(lags, ref_tokens),
        "lag_slope": M.lag_slope(lags),
        "window_s": round(window, 1),
        "latency_first_window": M.latency_block(first, len(first)),
        "latency_last_window": M.latency_block(last, len(last)),
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
        **rss_figures(sampler.samples, interval),
        "cpu_per_audio_s": rounded(cpu / long.duration, 3) if cpu is not None else None,
        "drain_s": rounded(logs[0].drain, 3),
        "session_errors": session_errors(logs),
    }
