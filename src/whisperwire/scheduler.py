"""Inference scheduler: a bounded, fair queue of jobs in front of worker threads.

Every blocking piece of work (model decodes, clip windows) goes through `run(key, fn)`.
Jobs are kept per key (one key per session) and the worker takes them round-robin across
keys, so a session with a long clip gets one window, then every other session gets a turn.
The event loop never runs a job; it only awaits the future the worker completes.

Batching: a job may say how it can share one call with others (`Batchable`: a group and an
item). With `max_batch` > 1, a worker that takes such a job also takes the first jobs of the
same group waiting at the head of other keys, in their turn order, and runs them in one call
(on a GPU one encode/generate over several sessions' windows costs little more than one).
Each key taken this way has had its turn and goes to the back of the line.

Every job names its `kind` (what it was run for); `on_done(kind, seconds)`, if given, hears
each job's worker seconds (a batch's shared among its jobs) before its result is delivered.

Solo: a job whose session is the only one that asked for work in the last `solo_window_s`,
taken while no other job runs or waits, may run inside `solo()` (the engine's decoder on all
the cores, `Engine.solo_lane`); the other workers take nothing until it is done, so the cores
are never asked for more threads than they have. On 2 cores one 2-thread decode of tiny.en
takes about 0.6x the time of a 1-thread one: a lone stream hears its words sooner, and two or
more streams still get the 1-thread workers' throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("whisperwire.scheduler")

T = TypeVar("T")

_worker = threading.local()  # .solo: the job this worker thread runs now runs solo


def running_key() -> str:
    """The key (session) of the job calling this; "" outside a worker."""
    return getattr(_worker, "key", "")


def running_solo() -> bool:
    """Is the job calling this running solo (on the decoder of all the cores)? Its decode
    time then says nothing of what the workers carry."""
    return getattr(_worker, "solo", False)


class Overloaded(Exception):
    """The queue is full; the caller should tell its client to slow down or retry."""


@dataclass(frozen=True)
class Batchable:
    """How a job can run together with others: jobs of one `group` run as one
    `run_batch([item, ...])` call, which returns one result per item, in order."""

    group: Hashable
    item: Any
    run_batch: Callable[[list[Any]], list[Any]]


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    batchable: Batchable | None = None
    kind: str = "job"
    key: str = ""
    queued_at: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(
        self,
        workers: int = 1,
        max_pending: int = 256,
        max_batch: int = 1,
        on_done: Callable[[str, float], None] | None = None,
        solo: Callable[[], AbstractContextManager[Any]] | None = None,
        solo_window_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending = max_pending
        self._solo = solo  # runs a lone job on the decoder of all the cores
        self.solo_window_s = solo_window_s
        self._clock = clock
        self._asked: dict[str, float] = {}  # key -> when it last asked for a job
        self._running = 0  # jobs on the workers now
        self._solo_running = False
        self.solo_runs = 0
        self._on_done = on_done  # (kind, worker seconds) of each job run, on its thread
        self.max_batch = max(1, max_batch)
        self.batches_run = 0  # calls that ran more than one job
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._pending = 0
        self._cond = threading.Condition()
        self._stopping = False
        self.busy_seconds = 0.0
        self.jobs_done = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"whisperwire-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(
        self, key: str, fn: Callable[[], T], batchable: Batchable | None = None, kind: str = "job"
    ) -> T:
        """Run `fn()` on a worker thread, in fair turn with other keys; await its result.
        With `batchable`, the job may instead run in one call with others of its group.
        `kind` says what the job is for (the decode metrics' label)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if self._pending >= self.max_pending:
                raise Overloaded(f"{self._pending} inference jobs are already queued")
            self._queues.setdefault(key, deque()).append(
                _Job(fn, future, loop, batchable, kind, key)
            )
            self._pending += 1
            if self._solo is not None:
                self._asked_now(key)
            self._cond.notify()
        return await future

    def _next_jobs(self) -> tuple[list[_Job], bool] | None:
        """The next job in turn, and the jobs of its batch group at the head of other keys;
        and whether it runs solo."""
        with self._cond:
            while not self._stopping and (not self._pending or self._solo_running):
                self._cond.wait()
            if not self._pending:
                return None
            first = next(iter(self._queues))
            jobs = [self._take(first)]
            group = jobs[0].batchable.group if jobs[0].batchable is not None else None
            if group is not None and self.max_batch > 1:
                for key, queue in list(self._queues.items()):
                    if len(jobs) >= self.max_batch:
                        break
                    if key == first:  # one job per key and turn
                        continue
                    head = queue[0]
                    same = head.batchable is not None and head.batchable.group == group
                    if same and not head.future.cancelled():
                        jobs.append(self._take(key))
            solo = len(jobs) == 1 and self._running == 0 and self._alone(first)
            self._running += 1
            self._solo_running = solo
            return jobs, solo

    def _asked_now(self, key: str) -> None:
        """Note that `key` asked for a job; forget the keys that asked before the window."""
        now = self._clock()
        self._asked.pop(key, None)
        self._asked[key] = now  # in order of asking: the oldest first
        horizon = now - self.solo_window_s
        while (oldest := next(iter(self._asked))) != key and self._asked[oldest] < horizon:
            del self._asked[oldest]

    def _alone(self, key: str) -> bool:
        """May the job of `key` just taken run solo: nothing else waits, and no other key
        asked for a job within the window?"""
        if self._solo is None or self._pending:
            return False
        horizon = self._clock() - self.solo_window_s
        return all(other == key or when < horizon for other, when in self._asked.items())

    def _take(self, key: str) -> _Job:
        """Pop the first job of `key`; the key goes to the back of the line."""
        queue = self._queues.pop(key)
        job = queue.popleft()
        self._pending -= 1
        if queue:
            self._queues[key] = queue
        return job

    def _work(self) -> None:
        while (taken := self._next_jobs()) is not None:
            jobs, solo = taken
            outcomes: list[tuple[_Job, Any, BaseException | None]] = []
            try:
                outcomes = self._run(jobs, solo)
            finally:  # the worker is free before anyone hears: a next job sees it so
                with self._cond:
                    self._running -= 1
                    if solo:
                        self._solo_running = False
                    self._cond.notify_all()
            for job, result, exc in outcomes:
                self._deliver(job, result, exc)

    def _run(self, jobs: list[_Job], solo: bool) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run the jobs (one, or a batch) -> each job's result or exception."""
        jobs = [job for job in jobs if not job.future.cancelled()]  # sessions gone
        if not jobs:
            return []
        if solo:
            self.solo_runs += 1
        _worker.solo, _worker.key = solo, jobs[0].key
        started = time.monotonic()
        results: list[Any] = []
        failure: BaseException | None = None
        try:
            with self._solo() if solo and self._solo else contextlib.nullcontext():
                if len(jobs) == 1:
                    results = [jobs[0].fn()]
                else:
                    batch = jobs[0].batchable
                    assert batch is not None
                    results = batch.run_batch([job.batchable.item for job in jobs])  # type: ignore[union-attr]
                    if len(results) != len(jobs):
                        raise RuntimeError(
                            f"a batch of {len(jobs)} jobs returned {len(results)} results"
                        )
                    self.batches_run += 1
        except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting tasks
            failure = exc
        finally:
            _worker.solo, _worker.key = False, ""
        elapsed = time.monotonic() - started
        self.busy_seconds += elapsed
        self.jobs_done += len(jobs)
        if self._on_done is not None:  # counted before anyone hears the result
            try:
                for job in jobs:
                    self._on_done(job.kind, elapsed / len(jobs))
            except Exception:  # a bug in a metric must not stop a worker
                log.exception("on_done failed")
        if failure is not None:
            return [(job, None, failure) for job in jobs]
        return [(job, result, None) for job, result in zip(jobs, results, strict=True)]

    @staticmethod
    def _deliver(job: _Job, result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            job.loop.call_soon_threadsafe(settle)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking jobs, let the workers finish what they run, drop the rest."""
        with self._cond:
            self._stopping = True
            dropped = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._pending = 0
            self._cond.notify_all()
        for job in dropped:
            self._deliver(job, None, Overloaded("the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout)
