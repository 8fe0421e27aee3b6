"""Inference scheduler: a bounded, fair queue of jobs in front of worker threads.

Every blocking piece of work (model decodes, clip windows) goes through `run(key, fn)`.
Jobs are kept per key (one key per session) and the worker takes them round-robin across
keys, so a session with a long clip gets one window, then every other session gets a turn.
The event loop never runs a job; it only awaits the future the worker completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("whisperwire.scheduler")

T = TypeVar("T")


class Overloaded(Exception):
    """The queue is full; the caller should tell its client to slow down or retry."""


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(self, workers: int = 1, max_pending: int = 256) -> None:
        self.max_pending = max_pending
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

    async def run(self, key: str, fn: Callable[[], T]) -> T:
        """Run `fn()` on a worker thread, in fair turn with other keys; await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if self._pending >= self.max_pending:
                raise Overloaded(f"{self._pending} inference jobs are already queued")
            self._queues.setdefault(key, deque()).append(_Job(fn, future, loop))
            self._pending += 1
            self._cond.notify()
        return await future

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._stopping and not self._pending:
                self._cond.wait()
            if not self._pending:
                return None
            key, queue = next(iter(self._queues.items()))
            job = queue.popleft()
            self._pending -= 1
            del self._queues[key]
            if queue:  # the key goes to the back of the line
                self._queues[key] = queue
            return job

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            if job.future.cancelled():  # its session went away while it waited
                continue
            started = time.monotonic()
            try:
                result = job.fn()
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting task
                self._deliver(job, None, exc)
            else:
                self._deliver(job, result, None)
            finally:
                self.busy_seconds += time.monotonic() - started
                self.jobs_done += 1

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
