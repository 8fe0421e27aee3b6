"""The forwarder's bounded memory and its outbox cap (``ForwardConfig.max_outbox_mb``),
against real HTTP servers on 127.0.0.1 and a backend that is down."""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fake_backends import FakeBackend, free_port
from forward_support import Inbox, make_config, read_outbox, seg, wait_until
from prometheus_client import CollectorRegistry

from whisperwire.forward import ForwardConfig, Forwarder, PrometheusForwardMetrics

CAP_MB = 0.1  # about 25 pages of 4 KiB: a few dozen finals of 3 KB
FINALS = 60


def text_of(i: int) -> str:
    return f"final {i:03d} " + "x" * 3000


def test_default_cap_is_256_mb(tmp_path: Path) -> None:
    cfg = ForwardConfig(url="http://127.0.0.1:9/hook", data_dir=tmp_path)
    assert cfg.max_outbox_mb == 256
    assert cfg.max_outbox_bytes == 256 * 1024 * 1024


def test_full_outbox_drops_new_finals_visibly_and_delivers_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Backend down, a tiny cap, finals beyond it: the finals past the cap are reported to
    their client as not forwarded, counted and logged once; every other final is delivered,
    in order, once the backend is back; then the outbox takes finals again."""
    port = free_port()
    backend = FakeBackend(port=port)
    registry = CollectorRegistry()
    inbox = Inbox()

    async def main() -> dict[str, Any]:
        cfg = make_config(
            f"http://127.0.0.1:{port}/hook", tmp_path, max_messages=3, max_outbox_mb=CAP_MB
        )
        fw = Forwarder(cfg, metrics=PrometheusForwardMetrics(registry))
        await fw.start()
        fw.attach("s", inbox.send)
        for i in range(FINALS):
            await fw.add_final("s", seg(i, text_of(i)))
        await wait_until(lambda: fw.stats()["dropped_outbox_full"] == len(inbox.messages))
        full = fw.stats()
        assert fw.stats()["retries"] > 0  # the backend is down: nothing was delivered
        backend.start()
        await fw.flush("s")
        assert await fw.drain(timeout_s=20)
        assert fw.stats()["outbox_depth"] == 0
        await fw.add_final("s", seg(FINALS, "after the outage"))  # room again
        await fw.flush("s")
        assert await fw.drain(timeout_s=10)
        after = fw.stats()
        await fw.close()
        return {"full": full, "after": after}

    try:
        with caplog.at_level(logging.INFO, logger="whisperwire.forward"):
            stats = asyncio.run(main())
    finally:
        backend.stop()

    dropped = [m for m in inbox.messages if m["error"] and "outbox full" in m["error"]]
    dropped_ids = [i for m in dropped for i in m["segment_ids"]]
    assert dropped and all(m["status"] is None and m["response"] is None for m in dropped)
    # Once full with the backend down, every later final is dropped: the tail.
    first = dropped_ids[0]
    assert first > 0 and dropped_ids == list(range(first, FINALS))
    assert stats["full"]["outbox_full"] is True
    assert stats["full"]["dropped_outbox_full"] == len(dropped_ids)
    assert stats["full"]["outbox_bytes"] < CAP_MB * 2**20 + 16 * 1024  # the cap holds
    assert registry.get_sample_value(
        "whisperwire_forward_dropped_total", {"reason": "outbox_full"}
    ) == len(dropped_ids)

    # Nothing else is lost: the finals before the cap reach the backend once, in order.
    bodies = [r.json() for r in backend.requests]
    delivered = [s["segment_id"] for b in bodies for s in b["segments"]]
    assert delivered == [*range(first), FINALS]
    assert [s["text"] for b in bodies for s in b["segments"]][:first] == [
        text_of(i) for i in range(first)
    ]
    # Batch numbers follow the finals: the open batch was closed before the first drop,
    # and each dropped final took a number of its own (a gap the backend can see).
    number_of = {s["segment_id"]: b["batch"] for b in bodies for s in b["segments"]}
    number_of.update({m["segment_ids"][0]: m["batch"] for m in dropped})
    numbers = [number_of[i] for i in range(FINALS + 1)]
    assert numbers == sorted(numbers)
    assert len({number_of[i] for i in dropped_ids}) == len(dropped_ids)
    assert not set(number_of[i] for i in dropped_ids) & {b["batch"] for b in bodies}

    assert stats["after"]["outbox_full"] is False
    assert stats["after"]["dropped_outbox_full"] == len(dropped_ids)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "full" in r.message]
    assert len(warnings) == 1  # once per episode, not once per final
    assert f"{len(dropped_ids)} final(s) were not forwarded" in caplog.text
    assert read_outbox(tmp_path) == []


def test_no_cap_keeps_every_final(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # down

    async def main() -> dict[str, Any]:
        fw = Forwarder(make_config(url, tmp_path, max_outbox_mb=0))
        await fw.start()
        for i in range(FINALS):
            await fw.add_final("s", seg(i, text_of(i)))
        stats = fw.stats()
        await fw.close(timeout_s=0.2)
        return stats

    stats = asyncio.run(main())
    assert stats["dropped_outbox_full"] == 0 and stats["outbox_full"] is False
    assert stats["outbox_bytes"] > CAP_MB * 2**20
    assert len(read_outbox(tmp_path, state="pending")) == FINALS


def test_waiting_finals_are_kept_on_disk_not_in_memory(tmp_path: Path) -> None:
    """With the backend down, 10 MB of finals wait in the outbox; the process's Python
    memory grows by a small fraction of that (lanes hold counts, not texts)."""
    url = f"http://127.0.0.1:{free_port()}/hook"  # down
    per_final = 32 * 1024
    count = 320

    async def main() -> int:
        fw = Forwarder(make_config(url, tmp_path, max_messages=2, max_outbox_mb=0))
        await fw.start()
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for i in range(count):
            await fw.add_final(f"s{i % 4}", seg(i, f"{i}:" + "y" * per_final))
        await wait_until(lambda: fw.stats()["retries"] >= 4, what="retries while down")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        assert fw.stats()["outbox_depth"] == count // 2
        await fw.close(timeout_s=0.2)
        return grown

    tracemalloc.start()
    try:
        grown = asyncio.run(main())
    finally:
        tracemalloc.stop()
    assert grown < count * per_final / 5, f"{grown} bytes held for {count * per_final} queued"
    assert len(read_outbox(tmp_path, state="pending")) == count // 2
