"""Where the router offers a new session: the replicas' reported room less what it has sent
them since. Pure: no Ray."""

from __future__ import annotations

import random

from whisperwire.replica_room import OVERLAP_S, Report, RoomBook


def book(**rooms: int) -> RoomBook:
    """Replicas that reported `rooms` at t=100."""
    b = RoomBook(rng=random.Random(7))
    for name, room in rooms.items():
        b.report(name, Report(room, 100.0))
    return b


def route(b: RoomBook, replicas: list[str], request: str, now: float) -> str:
    """What the router does for one request: the first offered is taken."""
    chosen = b.order(replicas)[0]
    b.chose(chosen, request, now)
    return chosen


def test_a_burst_of_sessions_is_spread_before_any_report_counts_them() -> None:
    b = book(a=5, b=5)
    went = [route(b, ["a", "b"], f"r{i}", now=100.5) for i in range(4)]
    assert sorted(went) == ["a", "a", "b", "b"]


def test_replicas_that_never_reported_share_a_burst_too() -> None:
    b = RoomBook(rng=random.Random(1))
    went = [route(b, ["a", "b"], f"r{i}", now=5.0) for i in range(6)]
    assert sorted(went) == ["a"] * 3 + ["b"] * 3


def test_the_less_used_replica_comes_first() -> None:
    b = book(a=1, b=3)
    went = [route(b, ["a", "b"], f"r{i}", now=100.5) for i in range(3)]
    assert sorted(went[:2]) == ["a", "b"] and went[2] == "b"  # then a has no room left


def test_short_requests_to_idle_replicas_go_to_both() -> None:
    """HTTP requests (/health) end before the next: idle replicas of unequal room share them."""
    b = book(a=60, b=80)
    went = set()
    for i in range(20):
        went.add(route(b, ["a", "b"], f"r{i}", now=100.5))
        b.completed(f"r{i}")
    assert went == {"a", "b"}


def test_sessions_are_spread_in_proportion_to_what_each_replica_carries() -> None:
    """Large, unequal rooms (a generous --max-lag, a GPU beside a CPU): most room first sent
    every session to one replica; the least used first spreads them by capacity."""
    b = book(a=80, b=60)
    went = [route(b, ["a", "b"], f"r{i}", now=100.5) for i in range(4)]
    assert sorted(went) == ["a", "a", "b", "b"]
    small_big = book(a=2, b=8)
    went = [route(small_big, ["a", "b"], f"r{i}", now=100.5) for i in range(5)]
    assert went.count("b") == 4 and went.count("a") == 1


def test_a_replica_carrying_more_of_its_capacity_comes_after_one_carrying_less() -> None:
    b = RoomBook(rng=random.Random(3))
    b.report("busy", Report.parse({"room": 2, "at": 100.0, "live": 6}))  # 75 % in use
    b.report("calm", Report.parse({"room": 1, "at": 100.0, "live": 1}))  # 50 %
    assert b.order(["busy", "calm"]) == ["calm", "busy"]
    assert Report.parse({"room": 1, "at": 1, "live": "x"}) == Report(1, 1.0)


def test_a_report_that_can_include_a_request_replaces_its_count() -> None:
    b = book(a=2, b=2)
    b.chose("a", "r1", now=98.0)  # before the report: the report has it
    b.chose("a", "r2", now=100.5)  # after: it does not
    assert b.room("a") == 1
    b.report("a", Report(1, 102.0))  # measured with r2 in it
    assert b.room("a") == 1
    b.chose("a", "r3", now=102.0 - OVERLAP_S / 2)  # maybe in flight at the report: counted
    assert b.room("a") == 0


def test_a_completed_request_gives_its_room_back() -> None:
    b = book(a=1, b=0)
    b.chose("a", "clip", now=100.5)
    assert b.room("a") == 0
    b.completed("clip")
    assert b.room("a") == 1 and b.order(["b", "a"])[0] == "a"


def test_with_no_room_anywhere_every_replica_is_still_offered_least_busy_first() -> None:
    b = book(a=0, b=0)
    b.chose("a", "r1", now=100.5)
    assert b.order(["a", "b"]) == ["b", "a"]
    b.report("b", Report(-3, 101.0))  # a replica's room is never less than none
    assert b.order(["a", "b"]) == ["b", "a"]


def test_a_draining_replica_goes_last() -> None:
    b = book(a=0, b=4)
    assert b.order(["a", "b"]) == ["b", "a"]


def test_a_replica_gone_is_forgotten_with_its_requests() -> None:
    b = book(a=3, b=3)
    b.chose("a", "r1", now=100.5)
    b.chose("b", "r2", now=100.5)
    b.keep({"b", "c"})
    assert set(b.reports) == {"b"} and set(b.sent) == {"r2"}
    b.forget("b")
    assert not b.reports and not b.sent


def test_a_request_routed_again_counts_once_where_it_went_last() -> None:
    b = book(a=2, b=2)
    b.chose("a", "r1", now=100.5)
    b.chose("b", "r1", now=100.6)
    assert (b.room("a"), b.room("b")) == (2, 1)


def test_stats_without_a_room_are_no_report() -> None:
    assert Report.parse({}) is None
    assert Report.parse({"room": "x", "at": 1.0}) is None
    assert Report.parse({"room": 3, "at": 12}) == Report(3, 12.0)


def test_a_resume_goes_to_the_replica_holding_its_session_even_without_room() -> None:
    b = book(b=4)
    b.report("a", Report.parse({"room": 0, "at": 100.0, "sessions": ["s1", "s2"]}))
    order = b.order(["a", "b"])
    assert order == ["b", "a"]  # a new session goes where there is room
    assert b.holder_first(order, "s2") == ["a", "b"]  # its client reconnecting, to its holder
    assert b.holder_first(order, "s9") == order  # nobody holds it: where there is room
    assert b.holder_first(order, "") == order


def test_a_resume_follows_the_latest_report() -> None:
    b = book(a=1, b=1)
    b.report("a", Report(1, 100.0, frozenset({"s1"})))
    b.report("a", Report(1, 101.0))  # ended, or its window passed
    b.report("b", Report(1, 101.0, frozenset({"s1"})))
    assert b.holder_first(["a", "b"], "s1") == ["b", "a"]


def test_stats_list_the_sessions_a_replica_can_resume() -> None:
    assert Report.parse({"room": 1, "at": 5, "sessions": ["x", 3]}) == Report(
        1, 5.0, frozenset({"x"})
    )
    assert Report.parse({"room": 1, "at": 5, "sessions": "x"}) == Report(1, 5.0)


def test_a_resume_waits_for_reports_made_after_it_unless_its_holder_is_known() -> None:
    b = book(a=1, b=1)  # reports of t=100
    assert b.awaits_report(["a", "b"], "s1", since=101.0)  # s1 may be younger than them
    b.report("a", Report(1, 101.5))
    assert b.awaits_report(["a", "b"], "s1", since=101.0)  # b has not reported since
    b.report("b", Report(1, 101.6, frozenset({"s1"})))
    assert not b.awaits_report(["a", "b"], "s1", since=101.0)  # b holds it
    b.report("b", Report(1, 102.6))
    assert not b.awaits_report(["a", "b"], "s1", since=101.0)  # both reported: nobody holds it
    assert not b.awaits_report(["a", "b"], "", since=101.0)  # not a resume
    assert not RoomBook().awaits_report(["a", "b"], "s1", since=101.0)  # none reported yet
