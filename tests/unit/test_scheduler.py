"""The scheduler: work off the event loop, fair turns across sessions, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Iterator

import pytest

from whisperwire.scheduler import Batchable, Overloaded, Scheduler, running_key, running_solo


def test_jobs_run_off_the_loop_and_return_results() -> None:
    async def main() -> None:
        scheduler = Scheduler()
        loop_thread = threading.get_ident()
        ident = await scheduler.run("a", threading.get_ident)
        assert ident != loop_thread
        with pytest.raises(ZeroDivisionError):
            await scheduler.run("a", lambda: 1 / 0)
        scheduler.close()

    asyncio.run(main())


def test_a_job_knows_the_session_it_runs_for() -> None:
    """(A decode sent to a model deployment is named by it.)"""

    async def main() -> None:
        scheduler = Scheduler(workers=2)
        keys = await asyncio.gather(*(scheduler.run(k, running_key) for k in ("a", "b", "a")))
        assert keys == ["a", "b", "a"] and running_key() == ""
        scheduler.close()

    asyncio.run(main())


def test_the_queue_is_bounded() -> None:
    async def main() -> None:
        scheduler = Scheduler(max_pending=2)
        gate = threading.Event()
        running = asyncio.create_task(scheduler.run("a", lambda: gate.wait(5)))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(scheduler.run("a", lambda: None)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await scheduler.run("b", lambda: None)
        gate.set()
        await asyncio.gather(running, *queued)
        scheduler.close()

    asyncio.run(main())


def test_cancelled_jobs_are_skipped() -> None:
    async def main() -> list[int]:
        scheduler = Scheduler()
        ran: list[int] = []
        gate = threading.Event()
        first = asyncio.create_task(scheduler.run("a", lambda: gate.wait(5)))
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(scheduler.run("b", lambda: ran.append(1)))
        await asyncio.sleep(0.01)
        doomed.cancel()
        gate.set()
        await first
        await asyncio.sleep(0.05)
        time.sleep(0.05)
        scheduler.close()
        return ran

    assert asyncio.run(main()) == []


def _batchable(group: str, item: int, calls: list[list[int]]) -> Batchable:
    def run_batch(items: list[int]) -> list[int]:
        calls.append(items)
        return [10 * i for i in items]

    return Batchable(group, item, run_batch)


def _queue_behind_a_busy_worker(
    scheduler: Scheduler, jobs: list[tuple[str, str | None, int]], calls: list[list[int]]
) -> list[int]:
    """Hold the only worker, queue `jobs` (key, batch group or None, item), let it go."""

    async def main() -> list[int]:
        gate = threading.Event()
        held = asyncio.create_task(scheduler.run("held", lambda: gate.wait(5)))
        await asyncio.sleep(0.05)
        tasks = []
        for key, group, item in jobs:

            def alone(item: int = item) -> int:
                calls.append([item])
                return 10 * item

            batchable = None if group is None else _batchable(group, item, calls)
            tasks.append(asyncio.create_task(scheduler.run(key, alone, batchable)))
            await asyncio.sleep(0)
        gate.set()
        await held
        results = await asyncio.gather(*tasks)
        scheduler.close()
        return list(results)

    return asyncio.run(main())


def test_every_session_keeps_its_turn_whatever_the_others_queued() -> None:
    """Sessions queue backlogs of different sizes, each all at once, in a shuffled order:
    every job runs (nobody starves), and every session's n-th job runs before any session's
    (n+2)-th, so none waits behind another's backlog."""
    rng = random.Random(7)
    backlog = {f"s{k}": rng.randint(6, 20) for k in range(6)}
    keys = list(backlog)
    rng.shuffle(keys)
    jobs = [(key, None, 100 * k + n) for k, key in enumerate(keys) for n in range(backlog[key])]
    calls: list[list[int]] = []
    _queue_behind_a_busy_worker(Scheduler(), jobs, calls)
    ran = [(keys[item // 100], item % 100) for (item,) in calls]
    assert sorted(ran) == sorted((key, n) for key in keys for n in range(backlog[key]))
    position = {job: i for i, job in enumerate(ran)}
    for a in keys:
        for b in keys:
            for n in range(min(backlog[a], backlog[b] - 2)):
                assert position[(a, n)] < position[(b, n + 2)], (a, n, b, ran)


def test_jobs_of_one_group_at_the_head_of_other_sessions_run_as_one_batch() -> None:
    calls: list[list[int]] = []
    scheduler = Scheduler(max_batch=3)
    jobs = [("a", "en", 1), ("b", "en", 2), ("c", "de", 3), ("d", "en", 4), ("e", "en", 5)]
    results = _queue_behind_a_busy_worker(scheduler, jobs, calls)
    assert results == [10, 20, 30, 40, 50]  # every caller gets its own result
    # a, b and d share a group and are taken in turn order, up to max_batch; c ran alone
    # (another group) and e waited for the next call
    assert calls == [[1, 2, 4], [3], [5]]
    assert scheduler.batches_run == 1


def test_a_session_gives_one_job_per_batch_and_keeps_its_turn() -> None:
    calls: list[list[int]] = []
    scheduler = Scheduler(max_batch=8)
    jobs = [("a", "en", 1), ("a", "en", 2), ("b", "en", 3), ("c", None, 4)]
    results = _queue_behind_a_busy_worker(scheduler, jobs, calls)
    assert results == [10, 20, 30, 40]
    # a's second job is not at a's head: it waits; c (not batchable) runs before it
    assert calls == [[1, 3], [4], [2]]


def test_without_max_batch_batchable_jobs_run_alone() -> None:
    calls: list[list[int]] = []
    jobs = [("a", "en", 1), ("b", "en", 2)]
    assert _queue_behind_a_busy_worker(Scheduler(), jobs, calls) == [10, 20]
    assert calls == [[1], [2]]


def test_a_failing_batch_fails_each_of_its_jobs() -> None:
    async def main() -> list[BaseException | int]:
        scheduler = Scheduler(max_batch=4)
        gate = threading.Event()

        def broken(items: list[int]) -> list[int]:
            raise RuntimeError("decoder crashed")

        held = asyncio.create_task(scheduler.run("held", lambda: gate.wait(5)))
        await asyncio.sleep(0.05)
        tasks = [
            asyncio.create_task(scheduler.run(k, lambda: 0, Batchable("g", i, broken)))
            for i, k in enumerate("ab")
        ]
        await asyncio.sleep(0.01)
        gate.set()
        await held
        out = await asyncio.gather(*tasks, return_exceptions=True)
        after = await scheduler.run("a", lambda: 7)  # the worker is still there
        scheduler.close()
        return [*out, after]

    first, second, after = asyncio.run(main())
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)
    assert after == 7


def test_each_job_is_reported_with_its_kind_before_its_result_is_delivered() -> None:
    """A failed job is reported too; a batch's seconds are shared among its jobs."""
    reported: list[tuple[str, float]] = []

    async def main() -> None:
        scheduler = Scheduler(max_batch=2, on_done=lambda kind, s: reported.append((kind, s)))
        await scheduler.run("a", lambda: time.sleep(0.02), kind="partial")
        assert [kind for kind, _ in reported] == ["partial"]  # already, as the result came
        assert reported[0][1] >= 0.02
        with pytest.raises(ZeroDivisionError):
            await scheduler.run("a", lambda: 1 / 0, kind="final")
        assert [kind for kind, _ in reported] == ["partial", "final"]
        calls: list[list[int]] = []
        gate = threading.Event()
        held = asyncio.create_task(scheduler.run("held", lambda: gate.wait(5), kind="clip"))
        await asyncio.sleep(0.05)
        batch = [
            asyncio.create_task(scheduler.run(k, lambda: 0, _batchable("g", i, calls), "partial"))
            for i, k in enumerate("bc")
        ]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(held, *batch)
        scheduler.close()
        assert calls == [[0, 1]]
        shares = reported[-2:]
        assert [kind for kind, _ in shares] == ["partial", "partial"]
        assert shares[0][1] == shares[1][1]

    asyncio.run(main())


class _Lane:
    """Stands in for `Engine.solo_lane`: counts the jobs run inside it."""

    def __init__(self) -> None:
        self.inside = False
        self.entered = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.inside, self.entered = True, self.entered + 1
        try:
            yield
        finally:
            self.inside = False


def test_a_lone_session_runs_solo_and_a_second_one_ends_it_for_the_window() -> None:
    now = [0.0]
    lane = _Lane()

    async def main() -> None:
        scheduler = Scheduler(workers=2, solo=lane, solo_window_s=2.0, clock=lambda: now[0])

        def seen() -> tuple[bool, bool]:  # (in the lane, running_solo())
            return lane.inside, running_solo()

        assert await scheduler.run("a", seen) == (True, True)
        assert await scheduler.run("a", seen) == (True, True)  # its own asking does not count
        now[0] = 1.0
        assert await scheduler.run("b", seen) == (False, False)  # a asked 1 s ago
        now[0] = 2.5
        assert await scheduler.run("a", seen) == (False, False)  # b asked 1.5 s ago
        now[0] = 3.6
        assert await scheduler.run("a", seen) == (True, True)  # b is quiet for 2.6 s
        assert lane.entered == 3 and scheduler.solo_runs == 3
        scheduler.close()

    asyncio.run(main())


def test_while_a_solo_job_runs_no_other_job_starts() -> None:
    lane = _Lane()

    async def main() -> list[str]:
        scheduler = Scheduler(workers=2, solo=lane)
        order: list[str] = []
        gate = threading.Event()

        def solo_job() -> bool:
            gate.wait(5)
            order.append("a done")
            return running_solo()

        def other() -> bool:
            order.append("b started")
            return running_solo()

        first = asyncio.create_task(scheduler.run("a", solo_job))
        await asyncio.sleep(0.05)  # a runs solo: it was alone when taken
        second = asyncio.create_task(scheduler.run("b", other))
        await asyncio.sleep(0.1)
        assert order == []  # a free worker waits: the solo job has the cores
        gate.set()
        assert await first is True
        assert await second is False  # a asked within the window: b runs on a worker
        scheduler.close()
        return order

    assert asyncio.run(main()) == ["a done", "b started"]


def test_two_sessions_run_at_once_on_the_workers() -> None:
    lane = _Lane()

    async def main() -> None:
        scheduler = Scheduler(workers=2, solo=lane)
        both = threading.Barrier(2, timeout=5)  # breaks unless both jobs run at once

        def job() -> bool:
            both.wait()
            return running_solo()

        held = threading.Event()
        warm = asyncio.create_task(scheduler.run("b", lambda: held.wait(5)))
        await asyncio.sleep(0.05)  # b runs solo until released
        held.set()
        await warm
        assert await asyncio.gather(scheduler.run("a", job), scheduler.run("b", job)) == [
            False,
            False,
        ]
        assert lane.entered == 1
        scheduler.close()

    asyncio.run(main())


def test_without_a_solo_lane_no_job_runs_solo() -> None:
    async def main() -> None:
        scheduler = Scheduler(workers=2)
        assert await scheduler.run("a", running_solo) is False
        assert scheduler.solo_runs == 0
        scheduler.close()

    asyncio.run(main())
