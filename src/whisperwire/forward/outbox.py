"""The durable SQLite outbox of the forwarder, and the one thread its work runs on.

Layout: a ``batches`` row per batch (``state`` ``open`` while it takes finals, ``pending``
once closed, ``failed`` when it failed permanently; a delivered batch is deleted) and a
``segments`` row per final.  Memory holds no texts: a batch's finals are read back from
the outbox only when it is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

OUTBOX_FILENAME = "forward-outbox.sqlite3"
LOCK_FILENAME = "forward-outbox.lock"

_T = TypeVar("_T")


@dataclass
class Batch:
    """A batch's identity.  ``size`` counts its finals; ``segments`` is only filled for
    the batch being sent (read back from the outbox)."""

    id: int
    session_id: str
    seq: int
    key: str
    attempts: int = 0
    size: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Recovered:
    """What a new Forwarder finds in the outbox: closed batches per session, and more."""

    pending: dict[str, int]
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
CREATE INDEX IF NOT EXISTS batches_by_session ON batches (session_id, state, id);
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


class Outbox:
    """Synchronous SQLite outbox; every method runs on the outbox thread.

    ``used_bytes`` (the pages in use, free pages left by deletions excluded) is measured
    after every write; the event loop reads it to apply ``max_outbox_mb``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.used_bytes = 0
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("outbox is not open")
        return self._conn

    def open(self) -> None:
        self._conn = _connect(self.path)
        self._conn.executescript(_SCHEMA)
        self._measure()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _measure(self) -> None:
        (pages,) = self.conn.execute("PRAGMA page_count").fetchone()
        (free,) = self.conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = self.conn.execute("PRAGMA page_size").fetchone()
        self.used_bytes = (int(pages) - int(free)) * int(size)

    def recover(self) -> Recovered:
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
        pending = dict(
            self.conn.execute(
                "SELECT session_id, COUNT(*) FROM batches WHERE state = 'pending' "
                "GROUP BY session_id ORDER BY MIN(id)"
            ).fetchall()
        )
        next_seq = {
            sid: int(m) + 1
            for sid, m in self.conn.execute(
                "SELECT session_id, MAX(seq) FROM batches WHERE session_id IN "
                "(SELECT session_id FROM batches WHERE state = 'pending') GROUP BY session_id"
            )
        }
        max_id = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()[0]
        failed = self.conn.execute("SELECT COUNT(*) FROM batches WHERE state = 'failed'").fetchone()
        self._measure()
        return Recovered(
            pending={str(sid): int(n) for sid, n in pending.items()},
            next_seq=next_seq,
            max_id=int(max_id),
            reopened=reopened,
            failed=int(failed[0]),
        )

    def next_pending(self, session_id: str, after_id: int) -> Batch | None:
        """The session's first closed batch after ``after_id``, with its finals."""
        row = self.conn.execute(
            "SELECT id, seq, key, attempts FROM batches WHERE session_id = ? AND "
            "state = 'pending' AND id > ? ORDER BY id LIMIT 1",
            (session_id, after_id),
        ).fetchone()
        if row is None:
            return None
        batch = Batch(id=row[0], session_id=session_id, seq=row[1], key=row[2], attempts=row[3])
        batch.segments = [
            json.loads(data)
            for (data,) in self.conn.execute(
                "SELECT data FROM segments WHERE batch_id = ? ORDER BY pos", (batch.id,)
            )
        ]
        batch.size = len(batch.segments)
        return batch

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
        self._measure()

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
        self._measure()


class OutboxThread:
    """Runs an :class:`Outbox`'s methods on one dedicated thread, whose FIFO queue also
    serialises the writes: submission order is execution order, and the event loop never
    blocks on disk I/O.  ``errors`` counts the calls that failed.

    While started, it holds a file lock on the data dir: one outbox, one process.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.outbox = Outbox(data_dir / OUTBOX_FILENAME)
        self.errors = 0
        self._executor: ThreadPoolExecutor | None = None
        self._lock: FileLock | None = None

    def start(self) -> None:
        """Take the data dir's lock (RuntimeError when another forwarder holds it) and
        start the thread."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.data_dir / LOCK_FILENAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RuntimeError(
                f"forward outbox in {self.data_dir} is in use by another forwarder "
                "(another whisperwire process?); use a different --data-dir"
            ) from None
        self._lock = lock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="whisperwire-outbox")

    def shutdown(self) -> None:
        """Stop the thread (after the writes queued) and release the lock."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Submit ``fn`` to the outbox thread."""
        if self._executor is None:
            raise RuntimeError("Forwarder not started")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def run_bg(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        """Submit ``fn`` without waiting for it; a failure is counted and logged."""

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                self.errors += 1
                logger.error("forward outbox: %s failed", what, exc_info=f.exception())

        self.run(fn, *args).add_done_callback(done)

    async def settle(self, fut: asyncio.Future[Any], what: str) -> None:
        """Wait for a submitted write; cancelling the caller does not cancel the write."""
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            raise  # the write itself still happens
        except Exception:
            self.errors += 1
            logger.exception("forward outbox: %s failed", what)
