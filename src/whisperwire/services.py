"""What every session shares (`Services`), and the decode jobs a session hands the scheduler:
each returns its hypothesis with the seconds it took and whether it ran solo, the load
monitor's measure of what the workers' decodes cost."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from whisperwire import protocol as proto
from whisperwire.clips import MAX_CLIP_SECONDS
from whisperwire.engine import Engine
from whisperwire.forward import Forwarder
from whisperwire.journal import JournalLink
from whisperwire.limits import MemoryBudget
from whisperwire.load import LoadMonitor
from whisperwire.metrics import Metrics
from whisperwire.policy import DecodeRequest, Hypothesis
from whisperwire.policy_config import PolicyConfig
from whisperwire.scheduler import Batchable, Scheduler, running_solo

__all__ = ["Services", "Timed", "batchable", "timed_batch", "timed_decode"]


@dataclass
class Services:
    """What every session shares: the model, the scheduler and the server's defaults."""

    engine: Engine
    scheduler: Scheduler
    policy_config: PolicyConfig
    default_language: str
    default_task: str
    max_message_bytes: int
    forwarder: Forwarder | None = None
    forward_wait_s: float = 30.0  # on `end`, how long the backend's reply may take
    load: LoadMonitor | None = None  # sets the cadence; None: always the policy's step
    max_backlog_s: float = 30.0  # undecoded audio before reading pauses; 0: no limit
    write_timeout_s: float = 60.0  # one message waiting to reach the client; 0: no limit
    memory: MemoryBudget | None = None  # None: no budget
    max_clip_s: float = MAX_CLIP_SECONDS
    resume_window_s: float = 0.0  # a dropped connection may resume within this; 0: never
    clock: proto.Clock = proto.utc_now  # stamps every event sent
    server: str = ""  # this server's name among replicas, in `ready` and /health; "": none
    metrics: Metrics = field(default_factory=Metrics)  # the server's; default: one of its own
    journal: JournalLink | None = None  # Ray Serve: the board its sessions are told to


Timed = tuple[Hypothesis, float, bool]  # a decode's words, its seconds, whether it ran solo


def batchable(
    engine: Engine, request: DecodeRequest, run_batch: Callable[[list[DecodeRequest]], list[Any]]
) -> Batchable | None:
    """How the scheduler may run `request` in one `run_batch` call with others of its batch
    group; None where the engine does not batch (batch 1) or the request goes alone."""
    group = engine.batch_group(request) if engine.batch > 1 else None
    return None if group is None else Batchable(group, request, run_batch)


def timed_decode(engine: Engine, request: DecodeRequest) -> Callable[[], Timed]:
    """The scheduler's job for one decode: `engine.decode`, timed, on the worker it runs on."""

    def run() -> Timed:
        started = time.perf_counter()
        hypothesis = engine.decode(request)
        return hypothesis, time.perf_counter() - started, running_solo()

    return run


def timed_batch(engine: Engine) -> Callable[[list[DecodeRequest]], list[Timed]]:
    """`engine.decode_batch`, each result with its share of the batch's seconds (batches
    never run solo)."""

    def run(requests: list[DecodeRequest]) -> list[Timed]:
        started = time.perf_counter()
        hypotheses = engine.decode_batch(requests)
        share = (time.perf_counter() - started) / len(requests)
        return [(hypothesis, share, False) for hypothesis in hypotheses]

    return run
