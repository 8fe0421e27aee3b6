"""Sessions that outlive their replica, on Ray Serve: the journals' board and a replica's link.

`SessionBoard` is a deployment of one replica (no CPU) that keeps the journal of every
session of every app replica (`journal.JournalBook`). Each app replica's `BoardLink` sends it
its sessions' updates in order, one call at a time, and a beat every `BEAT_S`; the writer of
a session sends a final to its client only once the board has it (`flushed`), so the board
never lags behind what a client was told. A client whose replica died reconnects with
`?resume=`; the replica it lands on claims the session (`claim`): the board gives the
journal over only if the holder is gone, which it asks Ray (a call to the holder's actor
that fails because the actor died), so a session is never run by two replicas at once.

Chosen over journals in the shared data dir (as the forwarding outboxes are): no shared
filesystem needed on a cluster, and nothing to write per final. The board is in memory: if
its replica dies with the app replica, that session cannot be taken over (the client gets
RESUME_FAILED and a new session), and a board Ray restarts starts empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from whisperwire.journal import Journal, JournalBook, Update

__all__ = ["BEAT_S", "SESSIONS_DEPLOYMENT", "BoardLink", "SessionBoard"]

log = logging.getLogger("whisperwire.ray")

SESSIONS_DEPLOYMENT = "whisperwire-sessions"
BEAT_S = 2.0  # a replica's beat: its journals stay while it beats, and keep_s after
PING_S = 5.0  # the holder's actor is asked this long whether it lives; no answer: it lives
FLUSH_S = 2.0  # a final waits this long at most for the board; then it goes anyway
MAX_QUEUED = 10_000  # updates waiting for a board that does not answer; the oldest go


@serve.deployment(name=SESSIONS_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class SessionBoard:
    """The journal of every live session of the app, and the handle of each app replica."""

    def __init__(self, keep_s: float) -> None:
        self.book = JournalBook(keep_s)
        self.replicas: dict[str, Any] = {}  # holder -> its actor's handle
        self._claiming: set[str] = set()

    def hello(self, holder: str, actor: Any) -> None:
        self.replicas[holder] = actor
        self.book.beat(holder, time.monotonic())

    def tell(self, holder: str, items: list[tuple[str, Any]]) -> bool:
        """A replica's updates and ends, in the order made; also its beat. False: the board
        does not know the replica's actor (it restarted): the replica says hello again."""
        now = time.monotonic()
        self.book.beat(holder, now)
        for kind, item in items:
            if kind == "update":
                self.book.record(item, now)
            else:
                self.book.forget(item, holder)
        self.book.expire(now)
        for gone in [h for h in self.replicas if h != holder and not self.book.beating(h)]:
            del self.replicas[gone]
        return holder in self.replicas

    async def claim(self, session_id: str, claimant: str) -> Journal | None:
        """The session's journal, now `claimant`'s, if its holder is gone; else None."""
        holder = self.book.holder(session_id)
        if holder is None or holder == claimant or session_id in self._claiming:
            return None
        self._claiming.add(session_id)
        try:
            if await self._alive(holder):
                log.info("session %s: its replica %s lives; not taken over", session_id, holder)
                return None
            return self.book.take(session_id, holder, claimant, time.monotonic())
        finally:
            self._claiming.discard(session_id)

    async def _alive(self, holder: str) -> bool:
        actor = self.replicas.get(holder)
        if actor is None:  # not heard for keep_s (gone), or not yet introduced to a new board
            return self.book.beating(holder)
        try:
            await asyncio.wait_for(actor.__ray_ready__.remote(), PING_S)
        except asyncio.TimeoutError:
            return True  # busy, not dead
        except ray.exceptions.RayActorError:
            return False
        return True


class BoardLink:
    """An app replica's side (`journal.JournalLink`): its sessions' updates to the board."""

    def __init__(self, board: DeploymentHandle, holder: str) -> None:
        self.board = board
        self.holder = holder
        self._queue: deque[tuple[str, Any]] = deque(maxlen=MAX_QUEUED)
        self._told = 0  # items queued, ever
        self._done = 0  # items the board has
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        # False while the board does not answer: finals then leave without waiting for it
        self.reachable = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._send())

    def record(self, update: Update) -> None:
        self._put(("update", update))

    def forget(self, session_id: str) -> None:
        self._put(("forget", session_id))

    def _put(self, item: tuple[str, Any]) -> None:
        self._queue.append(item)
        self._told += 1
        self._wake.set()

    async def flushed(self) -> None:
        told = self._told
        if not self.reachable:
            return
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self._done >= told), FLUSH_S)
            except asyncio.TimeoutError:
                self.reachable = False
                log.warning("the sessions' board is slow: finals go out without it meanwhile")

    async def claim(self, session_id: str) -> Journal | None:
        try:
            return await self.board.claim.remote(session_id, self.holder)
        except Exception as exc:  # noqa: BLE001 - no board: the session cannot be taken over
            log.warning("session %s: the board could not be asked: %s", session_id, exc)
            return None

    async def _send(self) -> None:
        """For the replica's life: the queued items, one call at a time, and a beat."""
        actor = ray.get_runtime_context().current_actor
        introduced = False
        while True:
            items, self._queue = self._queue, deque(maxlen=MAX_QUEUED)
            try:
                if not introduced:
                    await self.board.hello.remote(self.holder, actor)
                introduced = await self.board.tell.remote(self.holder, list(items))
            except Exception as exc:  # noqa: BLE001 - the board restarts; try again later
                log.warning("replica %s could not reach the sessions' board: %s", self.holder, exc)
                self._queue = deque([*items, *self._queue], maxlen=MAX_QUEUED)
                introduced = self.reachable = False
                await asyncio.sleep(BEAT_S)
                continue
            self.reachable = True
            async with self._progress:
                self._done += len(items)
                self._progress.notify_all()
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), BEAT_S)
