"""Ray Serve's request router for whisperwire: a new session goes to a replica with room for
it, the least used for what it carries (`replica_room`), not to the one with the fewest open
requests.

Ray's default router picks, of two replicas, the one with the fewer requests in flight as its
cache of queue lengths has them. For WebSocket sessions that cache lags a burst of clients:
it is updated after a request is sent, while the router has already chosen for the next ones,
and four sessions opened at once could all land on one replica (CI, 2026-12-05) while the
other stood idle. It also knows nothing of a replica's load: a replica whose decodes are slow
refuses a stream that an idle one would carry. This router takes each request from the chosen
replica's room the moment it chooses, so a burst is spread, and ranks replicas by the room
and live streams they report (`Whisperwire.record_routing_stats`, every `STATS_PERIOD_S`).
A reconnecting client goes to the replica that holds its session: Ray hands the router the
request's session id (its `x-session-id` header, which `ray_proxy` sets from `?resume=`),
and the reports list the sessions each replica can resume.

It runs in Ray's proxy (and in any deployment handle); `ray_app.deployment` names it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from whisperwire.replica_room import Report, RoomBook

__all__ = ["RESUME_WAIT_S", "STATS_PERIOD_S", "RoomRouter"]

STATS_PERIOD_S = 1.0  # how often each replica reports its room
# A resume waits at most this long for the replicas' reports to name its session's holder
# (they reach the router a second or two after they are made; longer on a busy machine).
RESUME_WAIT_S = 10.0
POLL_S = 0.1  # how often a waiting resume looks at the reports again


class RoomRouter(RequestRouter):
    """Offers the replicas one at a time, the least used with room first (`RoomBook.order`)."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.book = RoomBook()

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        by_name = {r.replica_id.unique_id: r for r in candidate_replicas}
        self.book.keep({r.replica_id.unique_id for r in self.curr_replicas.values()})
        for name, replica in by_name.items():
            self.book.report(name, Report.parse(replica.routing_stats))
        session = pending_request.metadata.session_id if pending_request is not None else ""
        if pending_request is not None and self._waits(list(by_name), session, pending_request):
            await asyncio.sleep(POLL_S)  # Ray asks again at once, with the replicas' latest
            return []
        # Replicas Ray knows to be at max_ongoing_requests first go last: Ray would pass
        # them over, and the request must be counted where it goes.
        free = {r.replica_id.unique_id for r in self.select_available_replicas(candidate_replicas)}
        order = self.book.order([n for n in by_name if n in free])
        order += self.book.order([n for n in by_name if n not in free])
        order = self.book.holder_first(order, session)
        if order and pending_request is not None:
            self.book.chose(order[0], pending_request.metadata.internal_request_id, time.time())
        return [[by_name[name]] for name in order]

    def _waits(self, replicas: list[str], session: str, request: PendingRequest) -> bool:
        """Does a resume of `session` wait for reports (see `RoomBook.awaits_report`)?"""
        made = request.created_at
        waited = time.time() - made
        return waited < RESUME_WAIT_S and self.book.awaits_report(replicas, session, made)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self.book.completed(internal_request_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.book.forget(replica_id.unique_id)
