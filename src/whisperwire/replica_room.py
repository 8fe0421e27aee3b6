"""Where a new session has room among replicas: what Ray Serve's router (`ray_router`) knows
of each replica between their reports, and the order it offers them in.

Each replica reports its room — the live streams it would still admit (`LoadMonitor.room`,
capped by --max-sessions; 0 while it drains) — with the time it measured it, about every
second. A router sends many requests between two reports, and several at the same instant (a
burst of clients), so it counts what it sent itself: a request chosen for a replica is taken
from that replica's room from the moment it is chosen until the replica's next report that
can include it, or until it completes. Ray's proxy does not tell a router which requests are
WebSockets, so every open request counts as a session until then; an HTTP request is short
and gives its room back when it completes.

A reconnecting client (`?resume=SESSION_ID`) must reach the replica that holds its session:
only that one can take it up again. Each report also lists the sessions the replica could
resume, and the holder of the one a request names goes first (`holder_first`), room or not:
the session was admitted when it first connected. Where no report lists it, the request waits
for every replica's next report (`awaits_report`): the session may be younger than the last.

Sans-I/O: times are passed in; no Ray import.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["OVERLAP_S", "UNREPORTED_ROOM", "Report", "RoomBook"]

# A report measured at `at` may not yet include requests chosen shortly before it (in flight
# to the replica, or from a clock that differs a little across machines): those still count.
OVERLAP_S = 1.0
# A replica that has not reported yet: every replica admits its first stream.
UNREPORTED_ROOM = 1


@dataclass(frozen=True)
class Report:
    room: int  # live streams the replica would still admit
    at: float  # when it measured it (seconds since the epoch, the replica's clock)
    sessions: frozenset[str] = frozenset()  # the sessions it holds that a client may resume
    live: int = 0  # the live streams it carries

    @classmethod
    def parse(cls, stats: dict[str, object]) -> Report | None:
        """A replica's routing stats as Ray hands them on; None where it has none (yet)."""
        room, at, sessions = stats.get("room"), stats.get("at"), stats.get("sessions", ())
        if not isinstance(room, int | float) or not isinstance(at, int | float):
            return None
        if not isinstance(sessions, list | tuple):
            sessions = ()
        live = stats.get("live", 0)
        live = int(live) if isinstance(live, int | float) else 0
        held = frozenset(s for s in sessions if isinstance(s, str))
        return cls(int(room), float(at), held, max(0, live))


@dataclass
class RoomBook:
    """One router's view: the replicas' last reports and the requests it has sent them."""

    reports: dict[str, Report] = field(default_factory=dict)
    # request id -> (replica, when chosen): open requests this router sent
    sent: dict[str, tuple[str, float]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def report(self, replica: str, report: Report | None) -> None:
        if report is not None:
            self.reports[replica] = report

    def chose(self, replica: str, request: str, now: float) -> None:
        """`request` goes to `replica` (a request routed again is counted once, where it went
        last)."""
        self.sent[request] = (replica, now)

    def completed(self, request: str) -> None:
        self.sent.pop(request, None)

    def keep(self, replicas: set[str]) -> None:
        """Forgets replicas no longer running, and the requests sent to them."""
        known = set(self.reports) | {replica for replica, _ in self.sent.values()}
        for gone in known - replicas:
            self.forget(gone)

    def forget(self, replica: str) -> None:
        self.reports.pop(replica, None)
        self.sent = {request: s for request, s in self.sent.items() if s[0] != replica}

    def open(self, replica: str) -> int:
        """Requests open on `replica` that this router sent."""
        return sum(1 for where, _ in self.sent.values() if where == replica)

    def room(self, replica: str) -> int:
        """The replica's room less the requests sent since its report could count them."""
        report = self.reports.get(replica)
        if report is None:
            return UNREPORTED_ROOM - self.open(replica)
        since = report.at - OVERLAP_S
        taken = sum(1 for where, at in self.sent.values() if where == replica and at > since)
        return report.room - taken

    def awaits_report(self, replicas: list[str], session: str, since: float) -> bool:
        """Should a request that resumes `session`, made at `since`, wait for reports? While no
        replica lists the session and some replica's last report is older (a session opened a
        moment before is in the next one); once all have reported since, nobody holds it. A
        replica that never reported is not waited for: it has only just started."""
        if not session or self.holder(replicas, session) is not None:
            return False
        return any(self.reports[r].at < since for r in replicas if r in self.reports)

    def holder(self, replicas: list[str], session: str) -> str | None:
        """The one of `replicas` whose last report lists `session`, if any."""
        return next(
            (r for r in replicas if r in self.reports and session in self.reports[r].sessions),
            None,
        )

    def holder_first(self, order: list[str], session: str) -> list[str]:
        """`order` with the replica that last reported holding `session` moved to the front
        (unchanged where none did, or for no session)."""
        holder = self.holder(order, session) if session else None
        return order if holder is None else [holder] + [r for r in order if r != holder]

    def used(self, replica: str) -> float:
        """The share of its capacity the replica has in use: its live streams and the
        requests sent since its report, over those streams and the room it reported."""
        report = self.reports.get(replica, Report(UNREPORTED_ROOM, 0.0))
        carried = report.live + report.room  # what it carries in all, as it reported
        return (carried - self.room(replica)) / carried if carried > 0 else 1.0

    def order(self, replicas: list[str]) -> list[str]:
        """The replicas with room first, the least used (`used`) first: sessions are spread in
        proportion to what each replica carries, where most room first sent every session to
        the one whose decodes measured faster while rooms were large (a generous --max-lag, a
        GPU). Among equals, fewer open requests from this router, then at random (not more
        room: short HTTP requests to idle replicas would all go to one). Those without room come
        last, fewest open requests first: a request sent there is refused by the replica
        itself (OVERLOADED) rather than left waiting in Ray's queue."""
        shuffled = self.rng.sample(replicas, len(replicas))

        def rank(r: str) -> tuple[bool, float, int]:
            room = self.room(r)
            return (room <= 0, self.used(r) if room > 0 else 0.0, self.open(r))

        return sorted(shuffled, key=rank)
