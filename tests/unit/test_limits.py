"""Per-address limits on a fake clock: failed authentication, sessions at once."""

from __future__ import annotations

import pytest

from whisperwire.limits import (
    CLIP_BYTES_PER_S,
    MAX_ADDRESSES,
    PIECE_RESERVE,
    AuthThrottle,
    MemoryBudget,
    PerAddress,
)


def test_an_address_is_refused_after_its_failures_until_the_window_passes() -> None:
    throttle = AuthThrottle(max_failures=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after("10.0.0.1", t) == 0
        throttle.failed("10.0.0.1", t)
    assert throttle.retry_after("10.0.0.1", 10.0) == pytest.approx(50.0)  # 60 s after the 1st
    assert throttle.retry_after("10.0.0.2", 10.0) == 0  # other addresses are not affected
    assert throttle.retry_after("10.0.0.1", 60.0) == 0  # the first failure has aged out


def test_failures_spread_over_time_never_lock_an_address_out() -> None:
    throttle = AuthThrottle(max_failures=3, window_s=60.0)
    for i in range(20):  # one typo a minute
        assert throttle.retry_after("a", 61.0 * i) == 0
        throttle.failed("a", 61.0 * i)


def test_the_failure_table_is_bounded() -> None:
    throttle = AuthThrottle(max_failures=2, window_s=60.0)
    for i in range(MAX_ADDRESSES + 50):
        throttle.failed(f"a{i}", 0.0)
        throttle.failed(f"a{i}", 0.0)
    assert len(throttle._failures) == MAX_ADDRESSES
    assert throttle.retry_after("a0", 1.0) == 0  # the oldest were forgotten
    assert throttle.retry_after(f"a{MAX_ADDRESSES + 49}", 1.0) > 0


def test_sessions_per_address() -> None:
    limit = PerAddress(2)
    assert limit.admit("a") and limit.admit("a") and not limit.admit("a")
    assert limit.admit("b")
    limit.release("a")
    assert limit.admit("a")
    unlimited = PerAddress(0)
    assert all(unlimited.admit("a") for _ in range(1000))


def test_memory_budget_refuses_at_the_limit_and_sizes_clips_to_what_is_left() -> None:
    used = [300 << 20]
    budget = MemoryBudget(limit=1 << 30, rss=lambda: used[0])
    assert not budget.over()
    room = budget.clip_seconds()  # 1 GiB - 300 MiB - the piece reserve, at 128 KB per second
    assert room == pytest.approx(((1 << 30) - (300 << 20) - PIECE_RESERVE) / CLIP_BYTES_PER_S)
    assert 40 * 60 < room < 45 * 60  # about 42 minutes of audio
    used[0] = 1 << 30
    assert budget.over() and budget.clip_seconds() == 0.0
    assert budget.status() == {"rss_mb": 1024.0, "budget_mb": 1024.0}
