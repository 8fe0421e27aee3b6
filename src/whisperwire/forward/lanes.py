"""Per-session delivery lanes: a session's closed batches are sent one at a time, in order.

A lane holds no batch, only how many of the session's closed batches are not yet resolved
(delivered or failed permanently) and the outbox id of the last one handled; the worker
reads each next batch from the outbox.  Memory is therefore bounded by the number of
sessions, however many batches wait on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Lane:
    """A session's ordered delivery queue, worked by at most one task."""

    session_id: str
    pending: int = 0  # closed batches not yet resolved
    last_id: int = 0  # outbox id of the last batch handled
    task: asyncio.Task[None] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)


#: Resolves the lane's next batch: returns the outbox id of the batch it handled, or None
#: when the outbox had no batch for it (a write that failed).
NextFn = Callable[[Lane], Awaitable[int | None]]


class Lanes:
    """The lanes of all sessions; ``queued`` = closed batches not yet resolved."""

    def __init__(
        self,
        next_batch: NextFn,
        on_progress: Callable[[], None],
        on_idle: Callable[[str], None],
    ) -> None:
        self._next_batch = next_batch
        self._on_progress = on_progress  # a batch was resolved
        self._on_idle = on_idle  # a lane has nothing left to send
        self._lanes: dict[str, Lane] = {}
        self.queued = 0

    def __len__(self) -> int:
        return len(self._lanes)

    def enqueue(self, session_id: str, count: int = 1) -> None:
        """``count`` more closed batches of the session (already written, or submitted
        to the outbox thread before the lane's next read) wait to be sent."""
        lane = self._lanes.get(session_id)
        if lane is None:
            lane = self._lanes[session_id] = Lane(session_id)
        lane.pending += count
        lane.idle.clear()
        self.queued += count
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(
                self._run(lane), name=f"forward:{session_id}"
            )

    def busy(self, session_id: str) -> bool:
        lane = self._lanes.get(session_id)
        return lane is not None and (lane.pending > 0 or lane.task is not None)

    def forget(self, session_id: str) -> None:
        self._lanes.pop(session_id, None)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [lane.task for lane in self._lanes.values() if lane.task is not None]

    async def drain(self, session_id: str | None, timeout_s: float) -> bool:
        """Wait until the session's closed batches (all sessions' if None) are resolved.
        Returns False on timeout."""
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

    async def _run(self, lane: Lane) -> None:
        try:
            while lane.pending:
                handled = await self._next_batch(lane)
                if handled is None:
                    logger.error(
                        "forward outbox holds fewer closed batches of session %s than "
                        "expected (%d); see the errors above",
                        lane.session_id,
                        lane.pending,
                    )
                    self.queued -= lane.pending
                    lane.pending = 0
                else:
                    lane.last_id = handled
                    lane.pending -= 1
                    self.queued -= 1
                self._on_progress()
        finally:
            lane.task = None
            if not lane.pending:
                lane.idle.set()
                self._on_idle(lane.session_id)
