"""A session's recent audio: appended in small frames, read as windows, dropped from the front.

Appending copies only the new frame (the backing array grows geometrically and is compacted
when most of it lies before the kept audio), so a stream's cost per frame does not grow with
the length of the decode window.
"""

from __future__ import annotations

import numpy as np


class SampleBuffer:
    """float32 samples addressed by absolute position (samples since the stream began)."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._data = np.zeros(max(1, capacity), dtype=np.float32)
        self._begin = 0  # index in _data of the first kept sample
        self._end = 0  # index in _data after the last sample
        self.start = 0  # absolute position of the first kept sample

    @property
    def stop(self) -> int:
        """Absolute position after the last sample."""
        return self.start + self._end - self._begin

    def __len__(self) -> int:
        return self._end - self._begin

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._end + n > len(self._data):
            self._make_room(n)
        self._data[self._end : self._end + n] = samples
        self._end += n

    def start_at(self, position: int) -> None:
        """The next sample appended is at `position` (while nothing is kept)."""
        if len(self):
            raise ValueError("start_at() while samples are kept")
        self.start = position

    def window(self, start: int, stop: int) -> np.ndarray:
        """A copy of the samples in [start, stop), absolute positions within the kept audio."""
        if not self.start <= start <= stop <= self.stop:
            raise IndexError(f"[{start}, {stop}) is outside the kept [{self.start}, {self.stop})")
        offset = self._begin - self.start
        return self._data[start + offset : stop + offset].copy()

    def discard_before(self, position: int) -> None:
        """Forget samples before `position` (clamped to what is kept)."""
        position = min(max(position, self.start), self.stop)
        self._begin += position - self.start
        self.start = position

    def _make_room(self, n: int) -> None:
        kept = len(self)
        capacity = len(self._data)
        while capacity < 2 * (kept + n):
            capacity *= 2
        # The same array when it is big enough once the discarded front is reclaimed.
        data = self._data if capacity == len(self._data) else np.zeros(capacity, np.float32)
        data[:kept] = self._data[self._begin : self._end]
        self._data, self._begin, self._end = data, 0, kept
