"""The forwarder's metrics: the :class:`ForwardMetrics` sink and its Prometheus form."""

from __future__ import annotations

from typing import Any, Protocol


class ForwardMetrics(Protocol):
    """Optional metrics sink (see :class:`PrometheusForwardMetrics`)."""

    def batch_sent(self) -> None: ...

    def batch_retried(self) -> None: ...

    def batch_failed(self) -> None: ...

    def final_dropped(self, reason: str) -> None: ...

    def set_outbox_depth(self, depth: int) -> None: ...


class PrometheusForwardMetrics:
    """:class:`ForwardMetrics` on prometheus_client, registered in ``registry``.

    Pass a fresh ``CollectorRegistry`` in tests; ``None`` means the global registry.
    """

    def __init__(self, registry: Any = None, prefix: str = "whisperwire_forward") -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        reg = REGISTRY if registry is None else registry
        self.sent = Counter(
            f"{prefix}_batches_sent", "Batches delivered (backend answered 2xx)", registry=reg
        )
        self.retried = Counter(
            f"{prefix}_retries", "Transient delivery failures that were retried", registry=reg
        )
        self.failed = Counter(
            f"{prefix}_batches_failed", "Batches that failed permanently", registry=reg
        )
        self.dropped = Counter(
            f"{prefix}_dropped",
            "Finals that were not forwarded, by reason (outbox_full: over max_outbox_mb)",
            ["reason"],
            registry=reg,
        )
        self.depth = Gauge(
            f"{prefix}_outbox_depth", "Open and pending batches not yet delivered", registry=reg
        )

    def batch_sent(self) -> None:
        self.sent.inc()

    def batch_retried(self) -> None:
        self.retried.inc()

    def batch_failed(self) -> None:
        self.failed.inc()

    def final_dropped(self, reason: str) -> None:
        self.dropped.labels(reason=reason).inc()

    def set_outbox_depth(self, depth: int) -> None:
        self.depth.set(depth)
