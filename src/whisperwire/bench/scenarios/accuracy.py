"""The accuracy scenario: each clip in its own session, one at a time; WER and word lags."""

from __future__ import annotations

from collections.abc import Sequence
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
from whisperwire.bench.scenarios.common import lags_of, rounded, server_config, session_errors
from whisperwire.bench.servers import System


def run_accuracy(
    system: System, streams: Sequence[StreamAudio], offline: OfflineReference, progress: Progress
) -> dict[str, Any]:
    assert system.url is not None
    logs: list[StreamLog] = []
    for stream in streams:
        logs += run_streams(system.url, [(stream.name, stream.samples)], on_frame=progress.advance)
    all_lags: list[M.WordLag] = []
    ref_tokens = 0
    to_first: list[float] = []
    to_first_after_word: list[float] = []
    for log, stream in zip(logs, streams, strict=True):
        line, lags, n = lags_of(log, stream, offline)
        all_lags += lags
        ref_tokens += n
        words = [w for piece in stream_words(stream, offline) for w in piece]
        if line.first_text_at is not None and log.first_sent_at is not None:
            to_first.append(line.first_text_at - log.first_sent_at)
            if words:
                to_first_after_word.append(line.first_text_at - log.sent_time(words[0][2]))
    refs = [s.reference or "" for s in streams]
    wer_stream = M.wer(refs, [log.text for log in logs])
    wer_offline = M.wer(refs, [stream_offline_text(s, offline) for s in streams])
    return {
        "sessions": len(logs),
        "audio_s": round(sum(s.duration for s in streams), 1),
        "wer_stream": rounded(wer_stream, 4),
        "wer_offline": rounded(wer_offline, 4),
        "wer_ratio": rounded(wer_stream / wer_offline, 3)
        if wer_stream is not None and wer_offline
        else None,
        "latency": M.latency_block(all_lags, ref_tokens),
        "time_to_first_text": M.summary(to_first),
        "first_text_after_first_word": M.summary(to_first_after_word),
        "drain": M.summary([d for log in logs if (d := log.drain) is not None]),
        "session_errors": session_errors(logs),
        "server_config": server_config(logs),
        "lags": {
            "first_seen": [round(w.first, 3) for w in all_lags],
            "final": [round(w.final, 3) for w in all_lags],
        },
        "transcripts": [
            {
                "clip": s.name,
                "reference": s.reference,
                "offline": stream_offline_text(s, offline),
                "stream": log.text,
            }
            for s, log in zip(streams, logs, strict=True)
        ],
    }
