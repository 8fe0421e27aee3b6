"""Outboxes for replicas that share one data dir (`serve --ray` with --forward-url).

Each replica claims the lowest numbered slot, `<data dir>/replicas/<n>/`, whose claim lock no
live process holds, and keeps that lock for its life; its forwarder's outbox lives in the
slot. When a replica dies, the operating system releases its lock, and the replica Ray starts
in its place claims the free slot: its forwarder recovers the outbox and delivers what the
dead one had not (finals are written to the outbox before they are sent, so none is lost
with a replica). A slot left by a scale-down is taken, with what it holds, by the next
replica that starts. The data dir must be shared by the replicas (one machine, or a shared
filesystem on a cluster).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["CLAIM_FILENAME", "SLOTS_DIRNAME", "claim_slot"]

SLOTS_DIRNAME = "replicas"
CLAIM_FILENAME = "claim.lock"
MAX_SLOTS = 10000  # as many as --ray-replicas allows


def claim_slot(data_dir: Path) -> tuple[Path, FileLock]:
    """The lowest free slot under `data_dir`, and its claim: a lock held until released or
    until this process ends. RuntimeError when every slot is held."""
    for n in itertools.islice(itertools.count(), MAX_SLOTS):
        slot = data_dir / SLOTS_DIRNAME / str(n)
        slot.mkdir(parents=True, exist_ok=True)
        claim = FileLock(slot / CLAIM_FILENAME, thread_local=False)
        try:
            claim.acquire(timeout=0)
        except Timeout:
            continue
        return slot, claim
    raise RuntimeError(f"{data_dir / SLOTS_DIRNAME}: all {MAX_SLOTS} outbox slots are held")
