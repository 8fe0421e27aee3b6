"""What the scenarios' results share: session errors, the server's config, word lags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import StreamLog
from whisperwire.bench.corpus import OfflineReference, StreamAudio, stream_words


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
    lags, ref_tokens = M.word_lags(stream_words(stream, offline), line, log.sent_time)
    return line, lags, ref_tokens


def rounded(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)
