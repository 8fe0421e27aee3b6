"""Helpers of the forwarder's tests: a config with short backoffs, a client inbox, and a
reader of the outbox's rows (what a user would look at with ``sqlite3``)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_backends import RecordedRequest

from whisperwire.forward import OUTBOX_FILENAME, ForwardConfig
from whisperwire.protocol import native
from whisperwire.protocol.events import ForwardReply


def make_config(url: str, data_dir: Path, **overrides: Any) -> ForwardConfig:
    """Short backoffs so retry tests take fractions of a second; no proxy env."""
    kwargs: dict[str, Any] = {
        "trust_env": False,
        "initial_backoff_s": 0.02,
        "max_backoff_s": 0.1,
        "timeout_s": 15.0,
        "connect_timeout_s": 2.0,
    }
    kwargs.update(overrides)
    return ForwardConfig(url=url, data_dir=data_dir, **kwargs)


def seg(i: int, text: str) -> dict[str, Any]:
    return {"segment_id": i, "text": text, "start": float(i), "end": float(i) + 0.5}


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(0.01)


class Inbox:
    """A session's client: collects the ``forward`` messages relayed to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, event: ForwardReply) -> None:
        self.messages.append(native.payload(event))  # as the client reads it


def by_session(reqs: list[RecordedRequest]) -> dict[str, list[RecordedRequest]]:
    out: dict[str, list[RecordedRequest]] = {}
    for r in reqs:
        out.setdefault(r.headers["x-connection-id"], []).append(r)
    return out


def read_outbox(data_dir: Path | str, state: str | None = None) -> list[dict[str, Any]]:
    """The outbox's batches (any process; synchronous), ordered by id.

    Each row: ``id, session_id, seq, state ('open'|'pending'|'failed'), key, created_at,
    closed_at, attempts, last_status, last_error, segments``.
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
