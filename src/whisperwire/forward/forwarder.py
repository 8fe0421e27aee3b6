"""The :class:`Forwarder`: batches each session's finals in the outbox, sends the closed
batches in order with retries, relays the backend's replies, and applies the outbox cap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from tenacity import RetryCallState

from whisperwire.forward.cap import OutboxCap
from whisperwire.forward.config import ForwardConfig
from whisperwire.forward.delivery import Outcome, post, retrying
from whisperwire.forward.formats import build_request, delivered_message, reply_message, snippet
from whisperwire.forward.lanes import Lane, Lanes
from whisperwire.forward.metrics import ForwardMetrics
from whisperwire.forward.outbox import Batch, Outbox, OutboxThread
from whisperwire.protocol.events import ForwardReply

logger = logging.getLogger(__name__)

#: The session's way back to its client; receives the ``{"type": "forward", ...}`` dict.
SendFn = Callable[[ForwardReply], Awaitable[None]]

# How long relaying one result to a client may take before we give up on that client.
_RELAY_TIMEOUT_S = 10.0


class Forwarder:
    """Per-session batching, durable outbox and ordered, retried delivery.

    All methods must be called from the event loop that ran :meth:`start`.
    """

    def __init__(self, config: ForwardConfig, *, metrics: ForwardMetrics | None = None) -> None:
        self.config = config
        self.format = config.resolved_format
        self._metrics = metrics
        self._store = OutboxThread(config.data_dir)
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._closing = asyncio.Event()
        self._down = asyncio.Event()  # the last attempt failed and will be retried
        self._state = "new"  # new -> running -> closing -> closed
        self._open: dict[str, Batch] = {}
        self._lanes = Lanes(self._send_next, self._publish_depth, self._maybe_forget)
        self._senders: dict[str, SendFn] = {}
        self._active: set[str] = set()
        self._next_seq: dict[str, int] = {}
        self._next_id = 1
        self._relays: set[asyncio.Task[None]] = set()
        self._sent = 0
        self._retries = 0
        self._failed = 0
        self._failed_in_outbox = 0
        self._cap = OutboxCap(config, self._outbox.path, metrics)

    @property
    def _outbox(self) -> Outbox:
        return self._store.outbox

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open (create) the outbox and resume delivery of whatever it holds."""
        if self._state != "new":
            raise RuntimeError(f"Forwarder.start() called twice (state {self._state})")
        self._store.start()
        try:
            await self._store.run(self._outbox.open)
            rec = await self._store.run(self._outbox.recover)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._store.run(self._outbox.close)
            self._store.shutdown()
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
        for session_id, count in rec.pending.items():
            self._lanes.enqueue(session_id, count)
        self._publish_depth()
        logger.info(
            "forwarding finals to %s (format %s, %d per batch); outbox %s: resuming %d "
            "pending batch(es) (%d left open by a previous run), %d failed kept",
            cfg.url,
            self.format,
            cfg.max_messages,
            self._outbox.path,
            sum(rec.pending.values()),
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
                await self._store.settle(fut, "close batch")
        while True:
            tasks = self._lanes.tasks() + list(self._relays)
            remaining = deadline - loop.time()
            if not tasks or remaining <= 0:
                break
            await asyncio.wait(tasks, timeout=remaining)
        left = self._lanes.queued
        self._state = "closed"  # from here on add_final raises; nothing new gets queued
        tasks = self._lanes.tasks() + list(self._relays)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        try:
            await self._store.run(self._outbox.close)  # FIFO: after every queued write
        except Exception:
            logger.exception("closing the forward outbox failed")
        self._store.shutdown()
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

    def attach(self, session_id: str, send: SendFn, first_batch: int = 0) -> None:
        """Register the session's way back to its client (replies go there). `first_batch`:
        the session's batches are numbered from there on at least (a session taken over
        from a dead replica goes on after the numbers that replica could have used)."""
        self._senders[session_id] = send
        self._next_seq[session_id] = max(self._next_seq.get(session_id, 0), first_batch)
        self._active.add(session_id)

    def detach(self, session_id: str) -> None:
        """Forget the client callback; later replies for this session are logged."""
        self._senders.pop(session_id, None)

    async def add_final(self, session_id: str, segment: dict[str, Any]) -> None:
        """Add one final segment ``{"segment_id", "text", "start", "end"}``.

        Returns once the final is committed to the outbox (one SQLite write on the DB
        thread; never waits for HTTP).  Closes the batch when it holds
        ``max_messages`` finals.  Finals with empty/blank text are ignored; while the
        outbox is full, the final is not forwarded and its client is told (see
        :class:`ForwardConfig`).  Cancelling the caller does not cancel the write.
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
        if self._cap.check(self._outbox.used_bytes):
            await self._drop_for_full_outbox(session_id, seg)
            return
        batch = self._open.get(session_id)
        create = batch is None
        if batch is None:
            batch = self._new_batch(session_id)
            self._open[session_id] = batch
        pos = batch.size
        batch.size += 1
        # While closing, close every batch at once: close() no longer waits for fill-ups.
        full = batch.size >= self.config.max_messages or self._state == "closing"
        if full:
            del self._open[session_id]
        fut = self._store.run(
            self._outbox.add_segment,
            (batch.id, session_id, batch.seq, batch.key),
            pos,
            json.dumps(seg, ensure_ascii=False, default=str),
            create,
            full,
            time.time(),
        )
        if full:
            self._lanes.enqueue(session_id)
        self._publish_depth()
        await self._store.settle(fut, "persist final")

    async def flush(self, session_id: str) -> None:
        """Close the session's open batch (if any) and queue it for delivery."""
        if self._state not in ("running", "closing"):
            return
        fut = self._close_open_batch(session_id)
        if fut is not None:
            await self._store.settle(fut, "close batch")

    async def drain(self, session_id: str | None = None, timeout_s: float = 10.0) -> bool:
        """Wait until the session's closed batches (all sessions' if None) are resolved
        (delivered or failed permanently).  Open batches are not flushed.  Returns
        False on timeout."""
        return await self._lanes.drain(session_id, timeout_s)

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
        ``outbox_depth`` = open + pending batches of this process; ``outbox_bytes`` is
        the outbox's size (pages in use), ``outbox_full`` whether it is at
        ``max_outbox_mb``, ``dropped_outbox_full`` the finals not forwarded for that."""
        return {
            "state": self._state,
            "format": self.format,
            "batches_sent": self._sent,
            "retries": self._retries,
            "batches_failed": self._failed,
            "open_batches": len(self._open),
            "pending_batches": self._lanes.queued,
            "outbox_depth": len(self._open) + self._lanes.queued,
            "failed_in_outbox": self._failed_in_outbox,
            "outbox_errors": self._store.errors,
            "outbox_bytes": self._outbox.used_bytes,
            "outbox_full": self._cap.full,
            "dropped_outbox_full": self._cap.dropped,
            "sessions": len(self._lanes),
        }

    # ------------------------------------------------------------------ internals

    def _new_batch(self, session_id: str) -> Batch:
        batch = Batch(
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
        fut = self._store.run(self._outbox.close_batch, batch.id, time.time())
        self._lanes.enqueue(session_id)
        self._publish_depth()
        return fut

    async def _drop_for_full_outbox(self, session_id: str, seg: dict[str, Any]) -> None:
        """The final gets a batch of its own that fails at once, after the session's open
        batch (closed here, so batch numbers keep the order of the finals)."""
        closed = self._close_open_batch(session_id)
        batch = self._new_batch(session_id)
        batch.segments = [seg]
        batch.size = 1
        error = self._cap.drop()
        logger.debug("session %s: final %s not forwarded: %s", session_id, seg["segment_id"], error)
        # Relayed from a task: the caller (the session's writer) sends the final itself first.
        msg = reply_message(batch, status=None, response=None, error=error)
        task = asyncio.get_running_loop().create_task(self._relay(session_id, msg))
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)
        if closed is not None:
            await self._store.settle(closed, "close batch")

    def _maybe_forget(self, session_id: str) -> None:
        if session_id in self._active or session_id in self._open or session_id in self._senders:
            return
        if self._lanes.busy(session_id):
            return
        self._lanes.forget(session_id)
        self._next_seq.pop(session_id, None)

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.set_outbox_depth(len(self._open) + self._lanes.queued)

    async def _send_next(self, lane: Lane) -> int | None:
        """Read the lane's next closed batch from the outbox and resolve it."""
        try:
            batch = await self._store.run(self._outbox.next_pending, lane.session_id, lane.last_id)
        except Exception:
            self._store.errors += 1
            logger.exception("forward outbox: reading the next batch of %s failed", lane.session_id)
            return None
        if batch is None:
            return None
        try:
            await self._deliver(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not wedge the session's lane
            logger.exception("forwarding batch %d failed unexpectedly", batch.id)
            await self._fail(batch, None, f"internal error: {exc!r}", None)
        return batch.id

    async def _attempt(self, batch: Batch, body: bytes, headers: httpx.Headers) -> Outcome:
        assert self._client is not None and self._sem is not None
        async with self._sem:
            outcome = await post(self._client, self.config.url, body, headers)
        batch.attempts += 1
        if outcome.kind == "retry":
            self._down.set()
        else:
            self._down.clear()
        return outcome

    def _will_retry(self, batch: Batch, state: RetryCallState) -> None:
        """tenacity's ``before_sleep``: count, persist and log a transient failure."""
        assert state.outcome is not None and state.next_action is not None
        outcome: Outcome = state.outcome.result()
        self._retries += 1
        if self._metrics is not None:
            self._metrics.batch_retried()
        self._store.run_bg(
            "record attempt",
            self._outbox.record_attempt,
            batch.id,
            batch.attempts,
            outcome.status,
            outcome.error,
        )
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
            state.next_action.sleep,
        )

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch until it is delivered or fails permanently."""
        body, headers = build_request(self.config, self.format, batch)
        retry = retrying(
            self.config,
            self._closing,
            attempts=lambda: batch.attempts,
            before_sleep=lambda state: self._will_retry(batch, state),
        )
        outcome: Outcome = await retry(self._attempt, batch, body, headers)
        if outcome.kind == "ok":
            self._store.run_bg("delete delivered batch", self._outbox.delete, batch.id)
            self._sent += 1
            if self._metrics is not None:
                self._metrics.batch_sent()
            logger.debug(
                "forwarded batch %d of session %s (%d finals, attempt %d): HTTP %s",
                batch.seq,
                batch.session_id,
                batch.size,
                batch.attempts,
                outcome.status,
            )
            msg = delivered_message(self.format, batch, outcome.status, outcome.body)
            await self._relay(batch.session_id, msg)
            return
        error = outcome.error
        if outcome.kind == "retry":
            error = f"gave up after {batch.attempts} attempts: {outcome.error}"
        await self._fail(batch, outcome.status, error, outcome.body)

    async def _fail(self, batch: Batch, status: int | None, error: str | None, body: Any) -> None:
        self._store.run_bg(
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
        msg = reply_message(batch, status=status, response=body, error=error or "forwarding failed")
        await self._relay(batch.session_id, msg)

    async def _relay(self, session_id: str, msg: ForwardReply) -> None:
        send = self._senders.get(session_id)
        if send is not None:
            try:
                await asyncio.wait_for(send(msg), _RELAY_TIMEOUT_S)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.info(
                    "could not relay forward reply to session %s (%r); logging it instead",
                    session_id,
                    exc,
                )
        logger.info(
            "forward reply for session %s batch %d (client gone): status=%s error=%s response=%s",
            session_id,
            msg.batch,
            msg.status,
            msg.error,
            snippet(msg.response),
        )
