"""The scheduler: work off the event loop, fair turns across sessions, bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from whisperwire.scheduler import Overloaded, Scheduler


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


def test_a_busy_session_does_not_starve_another() -> None:
    async def main() -> list[str]:
        scheduler = Scheduler()
        order: list[str] = []
        gate = threading.Event()

        def job(name: str) -> None:
            gate.wait(5)
            order.append(name)

        busy = [
            asyncio.create_task(scheduler.run("busy", lambda i=i: job(f"busy{i}")))
            for i in range(5)
        ]
        await asyncio.sleep(0.05)
        other = asyncio.create_task(scheduler.run("other", lambda: job("other")))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*busy, other)
        scheduler.close()
        return order

    order = asyncio.run(main())
    assert order.index("other") <= 2, order  # one busy job at most runs ahead of it


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
