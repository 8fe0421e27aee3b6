"""Forward final transcripts to an HTTP backend and relay its reply to the client.

Overview
--------
A :class:`Forwarder` collects each session's *final* segments into batches of
``max_messages`` finals, POSTs every closed batch to ``ForwardConfig.url`` in one of
several wire formats and hands the backend's reply back to the session that produced
the speech (``{"type": "forward", ...}``), or logs it when that client is gone.

Batching is per session, never across sessions.  A batch is closed when it holds
``max_messages`` finals, on :meth:`Forwarder.flush` (client ``flush``), on
:meth:`Forwarder.end_session` (client ``end`` / disconnect) and on
:meth:`Forwarder.close` (server shutdown).

Durability
----------
Every final is written to a SQLite outbox (``<data_dir>/forward-outbox.sqlite3``)
before :meth:`Forwarder.add_final` returns, so even an open, not yet full batch
survives a crash or SIGKILL.  All SQLite work runs on one dedicated thread whose FIFO
queue also serialises the writes; the event loop never blocks on disk I/O.  A batch
row is deleted only after the backend answered 2xx.  Connection errors, timeouts, 429
and 5xx are retried with capped exponential backoff and jitter (``Retry-After`` is
honoured); other statuses are not retried, the error is relayed and the batch is kept
with ``state='failed'`` for inspection (:func:`read_outbox`).  Batches of one session
are delivered strictly in order: batch k+1 is not sent before batch k succeeded or
failed permanently.  A new Forwarder on the same data dir closes the batches a dead
process left open and delivers everything still pending.

Delivery is exactly once from the outbox's point of view.  The unavoidable
at-least-once edge: if the backend received a batch but its 2xx never reached us (or
we were killed/closed after sending but before the delete was committed), the batch
is sent again.  Every request carries ``Idempotency-Key: <batch uuid>`` (stable across
retries and restarts) so a backend that cares can de-duplicate.

Wire formats (``ForwardConfig.format``)
---------------------------------------
``text``    the seed's form: ``Content-Type: text/plain``, finals' texts joined by
            ``"\\n"``, header ``X-Connection-ID: <session id>``.
``json``    ``{"session_id", "batch", "segments": [{"segment_id", "text", "start",
            "end"}], "text"}``; ``batch`` counts from 0 per session, ``text`` is the
            segment texts joined by ``"\\n"``.
``llama``   llama.cpp ``/completion``: ``{"prompt", "n_predict", "stream": false}``; the
            reply's ``content`` is relayed.
``openai``  ``/v1/chat/completions``: ``{"model", "messages": [{"role": "user",
            "content"}]}``; the reply's ``choices[0].message.content`` is relayed.
``auto``    ``llama`` if the URL path ends in ``/completion``, ``openai`` if it ends in
            ``/chat/completions``, else ``json``.

Every format also sends ``X-Connection-ID`` and ``Idempotency-Key``; user headers
(``ForwardConfig.headers``) are added last and override defaults of the same name.

Reply to the client
-------------------
For every batch that is delivered or fails permanently, the session's registered
callback (:meth:`Forwarder.attach`) receives::

    {"type": "forward", "batch": <n>, "segment_ids": [...], "status": <HTTP status|null>,
     "response": <reply>, "error": <null|text>}

``response`` is the backend's body (parsed JSON, else text); for ``llama``/``openai``
it is the model's content string and the full parsed reply is added as ``"body"``.  A
2xx reply without that content gives ``response: null`` and an ``error`` (the batch still
counts as delivered).  Transient failures are not reported (they are retried); a
permanent failure has ``error`` set and ``status`` = the HTTP status (null for network
errors when ``max_attempts`` ran out).  Without a callback the reply is logged.

Lifecycle (server wiring)
-------------------------
startup: ``await fw.start()``; connect: ``fw.attach(sid, send_json)``; each final:
``await fw.add_final(sid, seg)``; client ``flush``: ``await fw.flush(sid)``; client
``end``: ``await fw.end_session(sid, wait_s=...)``; disconnect:
``await fw.end_session(sid)``; shutdown (after the sessions): ``await fw.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import re
import sqlite3
import string
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx

try:  # POSIX only; without it two processes could share one outbox.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMATS",
    "OUTBOX_FILENAME",
    "ForwardConfig",
    "ForwardMetrics",
    "Forwarder",
    "PrometheusForwardMetrics",
    "SendFn",
    "default_data_dir",
    "parse_header",
    "parse_retry_after",
    "read_outbox",
    "resolve_format",
]

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("auto", "text", "json", "llama", "openai")
OUTBOX_FILENAME = "forward-outbox.sqlite3"
LOCK_FILENAME = "forward-outbox.lock"

#: The session's way back to its client; receives the ``{"type": "forward", ...}`` dict.
SendFn = Callable[[dict[str, Any]], Awaitable[None]]

_T = TypeVar("_T")

# RFC 9110 token characters for a header field name.
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers that control message framing; letting users set them would corrupt requests.
_FORBIDDEN_HEADERS = frozenset({"content-length", "transfer-encoding"})
# How long relaying one result to a client may take before we give up on that client.
_RELAY_TIMEOUT_S = 10.0
# Longest text of a backend reply we put in a log line.
_LOG_SNIPPET = 500


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/whisperwire`` (``~/.local/share/whisperwire`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "whisperwire"


def parse_header(value: str) -> tuple[str, str]:
    """Parse a ``'Name: value'`` string (e.g. from ``--forward-header``).

    Raises ValueError naming the offending header; a header's value is never echoed
    back because it is typically a secret (API key).
    """
    name, sep, val = value.partition(":")
    name = name.strip()
    if not sep:
        raise ValueError(f"invalid forward header {value!r}: expected 'Name: value'")
    if not _TOKEN_RE.match(name):
        raise ValueError(
            f"invalid forward header name {name!r}: must be a non-empty HTTP token "
            "(letters, digits, and !#$%&'*+-.^_`|~)"
        )
    if name.lower() in _FORBIDDEN_HEADERS:
        raise ValueError(f"forward header {name!r} cannot be set; httpx computes it")
    val = val.strip()
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in val):
        raise ValueError(
            f"invalid forward header {name!r}: value contains a control character (CR, LF, ...)"
        )
    try:
        val.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"invalid forward header {name!r}: value must be ASCII/latin-1") from None
    return name, val


def resolve_format(url: str, fmt: str = "auto") -> str:
    """Return the concrete wire format (``text|json|llama|openai``) for ``url``."""
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown forward format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/completion"):
        return "llama"
    return "json"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _check_template(template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"invalid prompt template {template!r}: {exc}") from None
    if fields != {"text"}:
        raise ValueError(
            f"invalid prompt template {template!r}: it must use the field {{text}} and no "
            "other field (write literal braces as {{ and }})"
        )


@dataclass
class ForwardConfig:
    """Settings of the transcript forwarder (see the CLI's ``--forward-*`` flags)."""

    url: str
    #: Finals per batch.  1 = every final utterance is answered as soon as it is final.
    max_messages: int = 1
    format: str = "auto"
    #: Extra request headers: ``'Name: value'`` strings (as given to ``--forward-header``)
    #: or ``(name, value)`` pairs; validated and normalised to a tuple of pairs.
    headers: Sequence[str | tuple[str, str]] = ()
    data_dir: Path = field(default_factory=default_data_dir)
    #: Read/write/pool timeout of one request (LLM backends can take a while).
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    #: ``str.format`` template with ``{text}``; builds the llama prompt / openai message.
    prompt_template: str = "{text}"
    llama_n_predict: int = 256
    openai_model: str = "default"
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    #: Upper bound on a server's ``Retry-After`` we are willing to honour.
    max_retry_after_s: float = 300.0
    #: Give up (mark failed) after this many attempts; None = retry transient errors
    #: for as long as the process lives (the outbox keeps the batch across restarts).
    max_attempts: int | None = None
    #: Concurrent requests across sessions (per session it is always one at a time).
    max_concurrency: int = 4
    #: Honour HTTP(S)_PROXY / NO_PROXY / SSL_CERT_FILE from the environment.
    trust_env: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"invalid forward URL {self.url!r}: expected http(s)://host[:port]/path"
            )
        resolve_format(self.url, self.format)  # validates the name
        self.format = self.format.strip().lower()
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {self.max_messages}")
        if self.llama_n_predict == 0 or self.llama_n_predict < -1:
            raise ValueError(f"llama_n_predict must be > 0 or -1, got {self.llama_n_predict}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        for name in ("timeout_s", "connect_timeout_s", "initial_backoff_s", "max_backoff_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_retry_after_s < 0:
            raise ValueError(f"max_retry_after_s must be >= 0, got {self.max_retry_after_s}")
        _check_template(self.prompt_template)
        normalised: list[tuple[str, str]] = []
        for item in self.headers:
            if isinstance(item, str):
                normalised.append(parse_header(item))
            else:
                name, value = item
                normalised.append(parse_header(f"{name}: {value}"))
        self.headers = tuple(normalised)
        self.data_dir = Path(self.data_dir).expanduser()

    @property
    def header_pairs(self) -> list[tuple[str, str]]:
        return [h if isinstance(h, tuple) else parse_header(h) for h in self.headers]

    @property
    def resolved_format(self) -> str:
        return resolve_format(self.url, self.format)


class ForwardMetrics(Protocol):
    """Optional metrics sink (see :class:`PrometheusForwardMetrics`)."""

    def batch_sent(self) -> None: ...

    def batch_retried(self) -> None: ...

    def batch_failed(self) -> None: ...

    def set_outbox_depth(self, depth: int) -> None: ...


class PrometheusForwardMetrics:
    """:class:`ForwardMetrics` on prometheus_client, registered in ``registry``.

    Pass a fresh ``CollectorRegistry`` in tests; ``None`` means the global registry.
    """

    def __init__(self, registry: Any = None, prefix: str = "whisperwire_forward") -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        reg = REGISTRY if registry is None else registry
        self.sent = Counter(
            f"{prefix}_batches_sent", "Batches delivered (backend answered 2xx)", registry=reg
        )
        self.retried = Counter(
            f"{prefix}_retries", "Transient delivery failures that were retried", registry=reg
        )
        self.failed = Counter(
            f"{prefix}_batches_failed", "Batches that failed permanently", registry=reg
        )
        self.depth = Gauge(
            f"{prefix}_outbox_depth", "Open and pending batches not yet delivered", registry=reg
        )

    def batch_sent(self) -> None:
        self.sent.inc()

    def batch_retried(self) -> None:
        self.retried.inc()

    def batch_failed(self) -> None:
        self.failed.inc()

    def set_outbox_depth(self, depth: int) -> None:
        self.depth.set(depth)


# --------------------------------------------------------------------------- outbox


@dataclass
class _Batch:
    id: int
    session_id: str
    seq: int
    key: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


@dataclass
class _Recovered:
    pending: list[_Batch]
    next_seq: dict[str, int]
    max_id: int
    reopened: int
    failed: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('open', 'pending', 'failed')),
    key         TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    closed_at   REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS batches_by_state ON batches (state, id);
CREATE TABLE IF NOT EXISTS segments (
    batch_id INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    pos      INTEGER NOT NULL,
    data     TEXT    NOT NULL,
    PRIMARY KEY (batch_id, pos)
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a committed transaction survives a process crash / SIGKILL (it is in
    # the WAL in the OS page cache); only an OS crash / power loss can lose the last few.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class _Outbox:
    """Synchronous SQLite outbox; every method runs on the Forwarder's DB thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("outbox is not open")
        return self._conn

    def open(self) -> None:
        self._conn = _connect(self.path)
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def recover(self) -> _Recovered:
        now = time.time()
        with self.conn as c:
            reopened = c.execute(
                "UPDATE batches SET state = 'pending', closed_at = ? WHERE state = 'open'", (now,)
            ).rowcount
            # A batch row is created together with its first segment, but be defensive.
            c.execute(
                "DELETE FROM batches WHERE state = 'pending' AND NOT EXISTS "
                "(SELECT 1 FROM segments s WHERE s.batch_id = batches.id)"
            )
        rows = self.conn.execute(
            "SELECT id, session_id, seq, key, attempts FROM batches "
            "WHERE state = 'pending' ORDER BY id"
        ).fetchall()
        batches = {
            r[0]: _Batch(id=r[0], session_id=r[1], seq=r[2], key=r[3], attempts=r[4]) for r in rows
        }
        for batch_id, data in self.conn.execute(
            "SELECT s.batch_id, s.data FROM segments s JOIN batches b ON b.id = s.batch_id "
            "WHERE b.state = 'pending' ORDER BY s.batch_id, s.pos"
        ):
            batches[batch_id].segments.append(json.loads(data))
        next_seq = {
            sid: int(m) + 1
            for sid, m in self.conn.execute(
                "SELECT session_id, MAX(seq) FROM batches WHERE session_id IN "
                "(SELECT session_id FROM batches WHERE state = 'pending') GROUP BY session_id"
            )
        }
        max_id = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()[0]
        failed = self.conn.execute("SELECT COUNT(*) FROM batches WHERE state = 'failed'").fetchone()
        return _Recovered(
            pending=list(batches.values()),
            next_seq=next_seq,
            max_id=int(max_id),
            reopened=reopened,
            failed=int(failed[0]),
        )

    def add_segment(
        self,
        batch: tuple[int, str, int, str],
        pos: int,
        data: str,
        create: bool,
        close: bool,
        now: float,
    ) -> None:
        batch_id, session_id, seq, key = batch
        with self.conn as c:
            if create:
                c.execute(
                    "INSERT INTO batches (id, session_id, seq, state, key, created_at) "
                    "VALUES (?, ?, ?, 'open', ?, ?)",
                    (batch_id, session_id, seq, key, now),
                )
            c.execute(
                "INSERT INTO segments (batch_id, pos, data) VALUES (?, ?, ?)", (batch_id, pos, data)
            )
            if close:
                c.execute(
                    "UPDATE batches SET state = 'pending', closed_at = ? WHERE id = ?",
                    (now, batch_id),
                )

    def close_batch(self, batch_id: int, now: float) -> None:
        with self.conn as c:
            c.execute(
                "UPDATE batches SET state = 'pending', closed_at = ? "
                "WHERE id = ? AND state = 'open'",
                (now, batch_id),
            )

    def record_attempt(
        self, batch_id: int, attempts: int, status: int | None, error: str | None
    ) -> None:
        with self.conn as c:
            c.execute(
                "UPDATE batches SET attempts = ?, last_status = ?, last_error = ? WHERE id = ?",
                (attempts, status, error, batch_id),
            )

    def mark_failed(
        self, batch_id: int, attempts: int, status: int | None, error: str | None
    ) -> None:
        with self.conn as c:
            c.execute(
                "UPDATE batches SET state = 'failed', attempts = ?, last_status = ?, "
                "last_error = ? WHERE id = ?",
                (attempts, status, error, batch_id),
            )

    def delete(self, batch_id: int) -> None:
        with self.conn as c:
            c.execute("DELETE FROM batches WHERE id = ?", (batch_id,))


def read_outbox(data_dir: Path | str, state: str | None = None) -> list[dict[str, Any]]:
    """Inspect an outbox (any process; synchronous).  Rows ordered by id.

    Each row: ``id, session_id, seq, state ('open'|'pending'|'failed'), key, created_at,
    closed_at, attempts, last_status, last_error, segments``.  To re-send failed batches:
    ``UPDATE batches SET state='pending' WHERE state='failed'`` and restart the server.
    """
    path = Path(data_dir) / OUTBOX_FILENAME
    if not path.exists():
        return []
    conn = sqlite3.connect(str(path), timeout=10.0)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if "batches" not in tables:
            return []
        conn.row_factory = sqlite3.Row
        query = "SELECT * FROM batches"
        args: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        rows = [dict(r) for r in conn.execute(query + " ORDER BY id", args)]
        for row in rows:
            row["segments"] = [
                json.loads(d)
                for (d,) in conn.execute(
                    "SELECT data FROM segments WHERE batch_id = ? ORDER BY pos", (row["id"],)
                )
            ]
        return rows
    finally:
        conn.close()


# --------------------------------------------------------------------------- delivery


@dataclass
class _Lane:
    """A session's ordered delivery queue, worked by at most one task."""

    session_id: str
    queue: deque[_Batch] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Outcome:
    kind: str  # "ok" | "retry" | "fatal"
    status: int | None
    error: str | None
    body: Any = None
    retry_after: float | None = None


def _header_safe(value: str) -> str:
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="")


def _parse_body(resp: httpx.Response) -> Any:
    ctype = resp.headers.get("content-type", "").lower()
    text = resp.text
    if "json" in ctype or (not ctype and text[:1] in ("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _snippet(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _LOG_SNIPPET else text[:_LOG_SNIPPET] + "…"


class Forwarder:
    """Per-session batching, durable outbox and ordered, retried delivery.

    All methods must be called from the event loop that ran :meth:`start`.
    """

    def __init__(self, config: ForwardConfig, *, metrics: ForwardMetrics | None = None) -> None:
        self.config = config
        self.format = config.resolved_format
        self._metrics = metrics
        self._outbox = _Outbox(config.data_dir / OUTBOX_FILENAME)
        self._executor: ThreadPoolExecutor | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._closing = asyncio.Event()
        self._down = asyncio.Event()  # the last attempt failed and will be retried
        self._lock_fd: int | None = None
        self._state = "new"  # new -> running -> closing -> closed
        self._open: dict[str, _Batch] = {}
        self._lanes: dict[str, _Lane] = {}
        self._senders: dict[str, SendFn] = {}
        self._active: set[str] = set()
        self._next_seq: dict[str, int] = {}
        self._next_id = 1
        self._queued = 0  # closed batches not yet resolved (sum of lane queues)
        self._sent = 0
        self._retries = 0
        self._failed = 0
        self._failed_in_outbox = 0
        self._db_errors = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open (create) the outbox and resume delivery of whatever it holds."""
        if self._state != "new":
            raise RuntimeError(f"Forwarder.start() called twice (state {self._state})")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="whisperwire-outbox")
        try:
            await self._db(self._outbox.open)
            rec = await self._db(self._outbox.recover)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db(self._outbox.close)
            self._executor.shutdown(wait=False)
            self._release_lock()
            self._state = "closed"
            raise
        cfg = self.config
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=cfg.max_concurrency, max_keepalive_connections=cfg.max_concurrency
            ),
            trust_env=cfg.trust_env,
            follow_redirects=False,
        )
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._state = "running"
        self._next_id = rec.max_id + 1
        self._next_seq.update(rec.next_seq)
        self._failed_in_outbox = rec.failed
        for batch in rec.pending:
            self._enqueue(batch)
        self._publish_depth()
        logger.info(
            "forwarding finals to %s (format %s, %d per batch); outbox %s: resuming %d "
            "pending batch(es) (%d left open by a previous run), %d failed kept",
            cfg.url,
            self.format,
            cfg.max_messages,
            self._outbox.path,
            len(rec.pending),
            rec.reopened,
            rec.failed,
        )

    async def close(self, timeout_s: float = 10.0) -> None:
        """Shutdown: close every open batch, keep delivering for up to ``timeout_s``,
        then cancel what is still in flight.  Undelivered batches stay in the outbox
        for the next Forwarder on this data dir."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        self._state = "closing"
        self._closing.set()  # wakes backoff sleeps for one last early attempt
        writes = [self._close_open_batch(sid) for sid in list(self._open)]
        for fut in writes:
            if fut is not None:
                await self._await_db(fut, "close batch")
        while True:
            tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
            remaining = deadline - loop.time()
            if not tasks or remaining <= 0:
                break
            await asyncio.wait(tasks, timeout=remaining)
        left = self._queued
        self._state = "closed"  # from here on add_final raises; nothing new gets queued
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        try:
            await self._db(self._outbox.close)  # FIFO: after every queued write
        except Exception:
            logger.exception("closing the forward outbox failed")
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._release_lock()
        self._state = "closed"
        if left:
            logger.warning(
                "forwarder closed with %d undelivered batch(es); they stay in %s and are "
                "sent by the next run",
                left,
                self._outbox.path,
            )
        else:
            logger.info("forwarder closed; nothing left to deliver")

    # ------------------------------------------------------------------ sessions

    def attach(self, session_id: str, send: SendFn) -> None:
        """Register the session's way back to its client (replies go there)."""
        self._senders[session_id] = send
        self._active.add(session_id)

    def detach(self, session_id: str) -> None:
        """Forget the client callback; later replies for this session are logged."""
        self._senders.pop(session_id, None)

    async def add_final(self, session_id: str, segment: dict[str, Any]) -> None:
        """Add one final segment ``{"segment_id", "text", "start", "end"}``.

        Returns once the final is committed to the outbox (one SQLite write on the DB
        thread; never waits for HTTP).  Closes the batch when it holds
        ``max_messages`` finals.  Finals with empty/blank text are ignored.
        Cancelling the caller does not cancel the write.
        """
        if self._state not in ("running", "closing"):
            raise RuntimeError(f"Forwarder is {self._state}; cannot add finals")
        raw = segment.get("text")
        text = "" if raw is None else str(raw)
        if not text.strip():
            return
        seg = {
            "segment_id": segment.get("segment_id"),
            "text": text,
            "start": segment.get("start"),
            "end": segment.get("end"),
        }
        self._active.add(session_id)
        batch = self._open.get(session_id)
        create = batch is None
        if batch is None:
            batch = self._new_batch(session_id)
            self._open[session_id] = batch
        pos = len(batch.segments)
        batch.segments.append(seg)
        # While closing, close every batch at once: close() no longer waits for fill-ups.
        full = len(batch.segments) >= self.config.max_messages or self._state == "closing"
        if full:
            del self._open[session_id]
        fut = self._db(
            self._outbox.add_segment,
            (batch.id, session_id, batch.seq, batch.key),
            pos,
            json.dumps(seg, ensure_ascii=False, default=str),
            create,
            full,
            time.time(),
        )
        if full:
            self._enqueue(batch)
        self._publish_depth()
        await self._await_db(fut, "persist final")

    async def flush(self, session_id: str) -> None:
        """Close the session's open batch (if any) and queue it for delivery."""
        if self._state not in ("running", "closing"):
            return
        fut = self._close_open_batch(session_id)
        if fut is not None:
            await self._await_db(fut, "close batch")

    async def drain(self, session_id: str | None = None, timeout_s: float = 10.0) -> bool:
        """Wait until the session's closed batches (all sessions' if None) are resolved
        (delivered or failed permanently).  Open batches are not flushed.  Returns
        False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        lanes = (
            list(self._lanes.values())
            if session_id is None
            else [lane for lane in [self._lanes.get(session_id)] if lane is not None]
        )
        for lane in lanes:
            remaining = deadline - loop.time()
            if lane.idle.is_set():
                continue
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(lane.idle.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    async def end_session(self, session_id: str, wait_s: float = 0.0) -> None:
        """Client ``end`` or disconnect: flush, optionally wait up to ``wait_s`` for the
        session's replies to be relayed (useful on ``end`` while the socket is still
        open), then detach.  Delivery continues in the background either way.  The wait
        ends as soon as an attempt fails: a backend that is down does not hold the client's
        ``end`` back (its finals wait in the outbox)."""
        await self.flush(session_id)
        if wait_s > 0 and not self._down.is_set():
            drained = asyncio.ensure_future(self.drain(session_id, wait_s))
            down = asyncio.ensure_future(self._down.wait())
            try:
                await asyncio.wait({drained, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drained.cancel()
                down.cancel()
        self.detach(session_id)
        self._active.discard(session_id)
        self._maybe_forget(session_id)

    def stats(self) -> dict[str, Any]:
        """Counters for logs/metrics.  ``retries`` counts retried attempts;
        ``outbox_depth`` = open + pending batches of this process."""
        return {
            "state": self._state,
            "format": self.format,
            "batches_sent": self._sent,
            "retries": self._retries,
            "batches_failed": self._failed,
            "open_batches": len(self._open),
            "pending_batches": self._queued,
            "outbox_depth": len(self._open) + self._queued,
            "failed_in_outbox": self._failed_in_outbox,
            "outbox_errors": self._db_errors,
            "sessions": len(self._lanes),
        }

    # ------------------------------------------------------------------ internals

    def _acquire_lock(self) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            return
        path = self.config.data_dir / LOCK_FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(
                f"forward outbox in {self.config.data_dir} is in use by another forwarder "
                "(another whisperwire process?); use a different --data-dir"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _db(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Submit ``fn`` to the DB thread; submission order is execution order."""
        if self._executor is None:
            raise RuntimeError("Forwarder not started")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db_bg(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        fut = self._db(fn, *args)

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                self._db_errors += 1
                logger.error("forward outbox: %s failed", what, exc_info=f.exception())

        fut.add_done_callback(done)

    async def _await_db(self, fut: asyncio.Future[Any], what: str) -> None:
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            raise  # the write itself still happens
        except Exception:
            self._db_errors += 1
            logger.exception("forward outbox: %s failed", what)

    def _new_batch(self, session_id: str) -> _Batch:
        batch = _Batch(
            id=self._next_id,
            session_id=session_id,
            seq=self._next_seq.get(session_id, 0),
            key=uuid.uuid4().hex,
        )
        self._next_id += 1
        self._next_seq[session_id] = batch.seq + 1
        return batch

    def _close_open_batch(self, session_id: str) -> asyncio.Future[None] | None:
        batch = self._open.pop(session_id, None)
        if batch is None:
            return None
        fut = self._db(self._outbox.close_batch, batch.id, time.time())
        self._enqueue(batch)
        self._publish_depth()
        return fut

    def _enqueue(self, batch: _Batch) -> None:
        lane = self._lanes.get(batch.session_id)
        if lane is None:
            lane = self._lanes[batch.session_id] = _Lane(batch.session_id)
        lane.queue.append(batch)
        lane.idle.clear()
        self._queued += 1
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(
                self._run_lane(lane), name=f"forward:{batch.session_id}"
            )

    def _maybe_forget(self, session_id: str) -> None:
        if session_id in self._active or session_id in self._open or session_id in self._senders:
            return
        lane = self._lanes.get(session_id)
        if lane is not None and (lane.queue or lane.task is not None):
            return
        self._lanes.pop(session_id, None)
        self._next_seq.pop(session_id, None)

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.set_outbox_depth(len(self._open) + self._queued)

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while lane.queue:
                batch = lane.queue[0]
                try:
                    await self._deliver(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug must not wedge the session's lane
                    logger.exception("forwarding batch %d failed unexpectedly", batch.id)
                    await self._fail(batch, None, f"internal error: {exc!r}", None)
                lane.queue.popleft()
                self._queued -= 1
                self._publish_depth()
        finally:
            lane.task = None
            if not lane.queue:
                lane.idle.set()
                self._maybe_forget(lane.session_id)

    def _build_request(self, batch: _Batch) -> tuple[bytes, httpx.Headers]:
        cfg = self.config
        joined = "\n".join(s["text"] for s in batch.segments)
        defaults = {"X-Connection-ID": _header_safe(batch.session_id), "Idempotency-Key": batch.key}
        payload: dict[str, Any]
        if self.format == "text":
            defaults["Content-Type"] = "text/plain"
            body = joined.encode("utf-8")
        else:
            if self.format == "llama":
                payload = {
                    "prompt": cfg.prompt_template.format(text=joined),
                    "n_predict": cfg.llama_n_predict,
                    "stream": False,
                }
            elif self.format == "openai":
                payload = {
                    "model": cfg.openai_model,
                    "messages": [
                        {"role": "user", "content": cfg.prompt_template.format(text=joined)}
                    ],
                }
            else:
                payload = {
                    "session_id": batch.session_id,
                    "batch": batch.seq,
                    "segments": batch.segments,
                    "text": joined,
                }
            defaults["Content-Type"] = "application/json"
            body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
        # User headers win over defaults of the same name; repeated user headers are kept.
        extra = cfg.header_pairs
        overridden = {n.lower() for n, _ in extra}
        headers = [(n, v) for n, v in defaults.items() if n.lower() not in overridden]
        return body, httpx.Headers(headers + extra)

    async def _attempt(self, body: bytes, headers: httpx.Headers) -> _Outcome:
        assert self._client is not None and self._sem is not None
        try:
            async with self._sem:
                resp = await self._client.post(self.config.url, content=body, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            return _Outcome("fatal", None, f"{type(exc).__name__}: {exc}")
        except (
            httpx.TimeoutException,
            httpx.NetworkError,
            httpx.RemoteProtocolError,
            httpx.ProxyError,
        ) as exc:
            return _Outcome("retry", None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        except httpx.HTTPError as exc:
            return _Outcome("fatal", None, f"{type(exc).__name__}: {exc}")
        status = resp.status_code
        body_value = _parse_body(resp)
        if 200 <= status < 300:
            return _Outcome("ok", status, None, body_value)
        reason = f"HTTP {status} {resp.reason_phrase}".rstrip()
        if status == 429 or status >= 500:
            return _Outcome(
                "retry",
                status,
                reason,
                body_value,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
            )
        return _Outcome("fatal", status, f"{reason} (not retried)", body_value)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            return min(retry_after, cfg.max_retry_after_s)
        exp = cfg.initial_backoff_s * (2 ** min(attempts - 1, 30))
        return min(cfg.max_backoff_s, exp) * random.uniform(0.5, 1.0)

    async def _sleep(self, delay: float, interruptible: bool) -> None:
        """Back off; a sleep that began before close() is cut short once by it."""
        if not interruptible or self._closing.is_set():
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    async def _deliver(self, batch: _Batch) -> None:
        """Send one batch until it is delivered or fails permanently."""
        body, headers = self._build_request(batch)
        cfg = self.config
        while True:
            outcome = await self._attempt(body, headers)
            batch.attempts += 1
            if outcome.kind == "retry":
                self._down.set()
            else:
                self._down.clear()
            if outcome.kind == "ok":
                self._db_bg("delete delivered batch", self._outbox.delete, batch.id)
                self._sent += 1
                if self._metrics is not None:
                    self._metrics.batch_sent()
                logger.debug(
                    "forwarded batch %d of session %s (%d finals, attempt %d): HTTP %s",
                    batch.seq,
                    batch.session_id,
                    len(batch.segments),
                    batch.attempts,
                    outcome.status,
                )
                await self._relay(batch, self._ok_message(batch, outcome))
                return
            if outcome.kind == "fatal" or (
                cfg.max_attempts is not None and batch.attempts >= cfg.max_attempts
            ):
                error = outcome.error
                if outcome.kind == "retry":
                    error = f"gave up after {batch.attempts} attempts: {outcome.error}"
                await self._fail(batch, outcome.status, error, outcome.body)
                return
            self._retries += 1
            if self._metrics is not None:
                self._metrics.batch_retried()
            self._db_bg(
                "record attempt",
                self._outbox.record_attempt,
                batch.id,
                batch.attempts,
                outcome.status,
                outcome.error,
            )
            delay = self._backoff(batch.attempts, outcome.retry_after)
            # Log the first failure and then sparsely, so a long outage doesn't flood logs.
            attempts = batch.attempts
            level = logging.WARNING if attempts & (attempts - 1) == 0 else logging.DEBUG
            logger.log(
                level,
                "forwarding batch %d of session %s failed (attempt %d: %s); retrying in %.2fs",
                batch.seq,
                batch.session_id,
                attempts,
                outcome.error,
                delay,
            )
            await self._sleep(delay, interruptible=outcome.retry_after is None)

    async def _fail(self, batch: _Batch, status: int | None, error: str | None, body: Any) -> None:
        self._db_bg(
            "mark batch failed", self._outbox.mark_failed, batch.id, batch.attempts, status, error
        )
        self._failed += 1
        self._failed_in_outbox += 1
        if self._metrics is not None:
            self._metrics.batch_failed()
        logger.error(
            "forwarding batch %d of session %s failed permanently: %s; kept in the outbox "
            "as failed (id %d)",
            batch.seq,
            batch.session_id,
            error,
            batch.id,
        )
        await self._relay(
            batch,
            self._message(batch, status=status, response=body, error=error or "forwarding failed"),
        )

    def _message(
        self, batch: _Batch, *, status: int | None, response: Any, error: str | None
    ) -> dict[str, Any]:
        return {
            "type": "forward",
            "batch": batch.seq,
            "segment_ids": [s.get("segment_id") for s in batch.segments],
            "status": status,
            "response": response,
            "error": error,
        }

    def _ok_message(self, batch: _Batch, outcome: _Outcome) -> dict[str, Any]:
        body = outcome.body
        if self.format not in ("llama", "openai"):
            return self._message(batch, status=outcome.status, response=body, error=None)
        content: Any = None
        if self.format == "llama":
            if isinstance(body, dict):
                content = body.get("content")
            where = "'content'"
        else:
            with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
                content = body["choices"][0]["message"]["content"]
            where = "'choices[0].message.content'"
        error = None if isinstance(content, str) else f"backend reply has no string {where}"
        msg = self._message(
            batch,
            status=outcome.status,
            response=content if isinstance(content, str) else None,
            error=error,
        )
        msg["body"] = body
        return msg

    async def _relay(self, batch: _Batch, msg: dict[str, Any]) -> None:
        send = self._senders.get(batch.session_id)
        if send is not None:
            try:
                await asyncio.wait_for(send(msg), _RELAY_TIMEOUT_S)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.info(
                    "could not relay forward reply to session %s (%r); logging it instead",
                    batch.session_id,
                    exc,
                )
        logger.info(
            "forward reply for session %s batch %d (client gone): status=%s error=%s response=%s",
            batch.session_id,
            batch.seq,
            msg["status"],
            msg["error"],
            _snippet(msg["response"]),
        )
