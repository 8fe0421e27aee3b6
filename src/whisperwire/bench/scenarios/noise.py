"""The hallucination scenario: sessions of digital silence and of white and pink noise.

Whatever a session's `final` messages say is invented: `final_words` counts their
normalised words (the figure that should be 0); partials are counted apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import run_streams
from whisperwire.bench.corpus import StreamAudio
from whisperwire.bench.progress import Progress
from whisperwire.bench.scenarios.common import session_errors
from whisperwire.bench.servers import System


def run_noise(system: System, streams: Sequence[StreamAudio], progress: Progress) -> dict[str, Any]:
    assert system.url is not None
    logs = run_streams(
        system.url, [(s.name, s.samples) for s in streams], on_frame=progress.advance
    )
    # A server whose admission control counts every connection as a possible speaker may
    # refuse some of the three at once: those run again, one at a time.
    for i, log in enumerate(logs):
        if log.refused:
            logs[i] = run_streams(system.url, [(streams[i].name, streams[i].samples)])[0]
    out: dict[str, Any] = {}
    for log, stream in zip(logs, streams, strict=True):
        partial_words = [
            len(M.tokens(str(m.get("text") or "")))
            for _, m in log.messages
            if m.get("type") == "partial"
        ]
        out[stream.name] = {
            "audio_s": round(stream.duration, 1),
            "final_words": len(M.tokens(log.text)),
            "text": log.text[:300],
            "partials_with_text": sum(1 for n in partial_words if n),
            "max_partial_words": max(partial_words, default=0),
            "session_errors": session_errors([log]),
        }
    return out
