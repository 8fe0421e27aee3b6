"""The outbox cap (``ForwardConfig.max_outbox_mb``): whether the outbox is full, and the
log lines, counters and error text of the finals not forwarded while it is."""

from __future__ import annotations

import logging
from pathlib import Path

from whisperwire.forward.config import ForwardConfig
from whisperwire.forward.metrics import ForwardMetrics

logger = logging.getLogger(__name__)

#: The reason (metrics label) of a final not forwarded because the outbox was full.
OUTBOX_FULL = "outbox_full"


class OutboxCap:
    """``full``: the outbox was at its cap when last checked; ``dropped``: the finals not
    forwarded for that.  A full episode is logged once at WARNING, its end at INFO."""

    def __init__(
        self, config: ForwardConfig, path: Path, metrics: ForwardMetrics | None = None
    ) -> None:
        self._limit = config.max_outbox_bytes
        self._mb = config.max_outbox_mb
        self._path = path
        self._metrics = metrics
        self.full = False
        self.dropped = 0
        self._dropped_in_episode = 0

    def check(self, used_bytes: int) -> bool:
        """Whether an outbox of ``used_bytes`` is full (never, without a cap)."""
        full = self._limit > 0 and used_bytes >= self._limit
        if full and not self.full:
            self._dropped_in_episode = 0
            logger.warning(
                "forward outbox %s is full (%.1f MB, --forward-max-outbox-mb %g): new finals "
                "are not forwarded (their clients are told) until deliveries make room",
                self._path,
                used_bytes / 2**20,
                self._mb,
            )
        elif self.full and not full:
            logger.info(
                "forward outbox has room again; %d final(s) were not forwarded while it was full",
                self._dropped_in_episode,
            )
        self.full = full
        return full

    def drop(self) -> str:
        """Count one final not forwarded; returns the error its client is told."""
        self.dropped += 1
        self._dropped_in_episode += 1
        if self._metrics is not None:
            self._metrics.final_dropped(OUTBOX_FULL)
        return (
            f"outbox full ({self._mb:g} MB, --forward-max-outbox-mb): this final was not forwarded"
        )
