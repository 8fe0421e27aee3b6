"""`GET /metrics` of whisperwire on Ray Serve: the metrics of every app replica, not of the one
the proxy happened to pick.

Each app replica keeps its own registry (`metrics.Metrics`), as one process does. Every
`PUSH_S` it sends its page to `MetricsBoard`, a deployment of one replica that keeps the
latest page of each; the replica that answers a scrape sends its own page first, then
returns the board's merge: every series labelled `replica` with the replica it came from
(`metrics.merge_expositions`), so `sum without (replica)` gives the application's figures.
A replica that stops pushing (it died, or was stopped) is dropped after `STALE_S`; its
counters then leave the sum, as a restarted process's do.

Chosen over each replica exposing Ray's own metrics (`ray.util.metrics`, scraped from every
node's metrics agent): the same names and the same page as one process, with nothing to
configure on the Prometheus side but the app's address.
"""

from __future__ import annotations

import time

from ray import serve

from whisperwire.metrics import merge_expositions

__all__ = ["BOARD_DEPLOYMENT", "PUSH_S", "STALE_S", "MetricsBoard"]

BOARD_DEPLOYMENT = "whisperwire-metrics"
PUSH_S = 5.0  # how often each app replica sends its page
STALE_S = 3 * PUSH_S  # a page older than this is of a replica gone


@serve.deployment(name=BOARD_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class MetricsBoard:
    """The latest metrics page of each app replica (one per replica alive: a bounded map)."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[float, bytes]] = {}

    def push(self, replica: str, page: bytes) -> None:
        now = time.monotonic()
        self.pages = {r: p for r, p in self.pages.items() if now - p[0] <= STALE_S}
        self.pages[replica] = (now, page)

    def merged(self) -> bytes:
        """Every live replica's page in one, each series labelled with its replica."""
        now = time.monotonic()
        live = {r: page for r, (at, page) in self.pages.items() if now - at <= STALE_S}
        return merge_expositions(live)
