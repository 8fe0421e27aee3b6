"""The run's progress, over the planned seconds of real-time audio."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Progress over the planned real-time seconds of audio (wall-clock progress): a tqdm bar
    on a terminal, else one line per phase and one every `every` seconds (for CI logs)."""

    def __init__(self, total: float, enabled: bool, every: float = 60.0) -> None:
        self.total = total
        self.done = 0.0
        self.enabled = enabled
        self.every = every
        self._next_line = time.monotonic() + every
        self._started = time.monotonic()
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=round(total, 1),
                    unit="s",
                    desc="bench",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
                    "[{elapsed}<{remaining}]",
                    dynamic_ncols=True,
                )
            except ImportError:
                self.bar = None

    def _line(self, text: str) -> None:
        if self.enabled:
            pct = 100 * self.done / self.total if self.total else 100.0
            elapsed = time.monotonic() - self._started
            print(
                f"[bench {pct:3.0f}% {elapsed / 60:5.1f} min] {text}", file=sys.stderr, flush=True
            )

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)
        else:
            self._line(text)

    def advance(self, seconds: float) -> None:
        seconds = min(seconds, max(0.0, self.total - self.done))  # estimates are not exact
        self.done += seconds
        if self.bar is not None:
            self.bar.update(seconds)
        elif time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + self.every
            self._line(f"{self.done:.0f} of {self.total:.0f} s of audio streamed")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
