"""Sans-I/O limits: per client address (failed authentication, sessions at once), and the
process's memory budget.

No sockets and no clock of its own: the server passes the address and the time, and the
memory reading is injected, so all of it is tested with fakes. Every table is bounded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ADDRESSES = 10_000  # addresses remembered for failed attempts; the oldest go first


@dataclass
class AuthThrottle:
    """After `max_failures` failed attempts from one address within `window_s`, that address
    is refused (even with a good key) until its oldest failure in the window is that old."""

    max_failures: int = 10
    window_s: float = 60.0
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address, deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return times

    def retry_after(self, address: str, now: float) -> float:
        """0 if `address` may try now, else the seconds until it may."""
        times = self._recent(address, now)
        if len(times) < self.max_failures:
            return 0.0
        return self.window_s - (now - times[0])

    def failed(self, address: str, now: float) -> None:
        times = self._recent(address, now)
        times.append(now)
        while len(times) > self.max_failures:  # only the last few matter
            times.popleft()
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)


@dataclass
class PerAddress:
    """Sessions open at once per client address (0: no limit)."""

    limit: int = 0
    _open: dict[str, int] = field(default_factory=dict)

    def admit(self, address: str) -> bool:
        """Count a new session from `address`, or refuse it (False) at the limit."""
        if self.limit and self._open.get(address, 0) >= self.limit:
            return False
        self._open[address] = self._open.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)


# A decoded clip: float32 at 16 kHz, briefly twice (its parts, then joined), and a third for
# what the allocator keeps: a 1.5 h clip counted twice took a 1.2 GB budget to 1.216 GB.
CLIP_BYTES_PER_S = 3 * 4 * 16000
PIECE_RESERVE = 256 << 20  # Whisper's features of one clip piece (3 min: ~170 MB), and slack


@dataclass
class MemoryBudget:
    """New work is refused while the process's resident memory is over `limit` bytes, and a
    clip is decoded only as far as the memory left allows."""

    limit: int  # bytes
    rss: Callable[[], int]  # the process's resident memory now, in bytes

    def over(self) -> bool:
        return self.rss() >= self.limit

    def clip_seconds(self) -> float:
        """How much audio one clip may decode to now, keeping the process under the limit."""
        left = self.limit - self.rss() - PIECE_RESERVE
        return max(0.0, left / CLIP_BYTES_PER_S)

    def status(self) -> dict[str, float]:
        return {"rss_mb": round(self.rss() / 2**20, 1), "budget_mb": round(self.limit / 2**20, 1)}
