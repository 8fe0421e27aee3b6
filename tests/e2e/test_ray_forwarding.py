"""Forwarding with `serve --ray`: each replica forwards through its own outbox in a slot of
the shared data dir, and a replica lost with finals not yet delivered does not lose them: the
replica Ray starts in its place takes the slot and delivers them. Real local Ray cluster, a
real HTTP backend on 127.0.0.1, no mocks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from fake_backends import FakeBackend, free_port
from support import Server, concurrent_streams, load_audio

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def backend_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def forwarding_replicas(
    tmp_path_factory: pytest.TempPathFactory, backend_port: int
) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("ray-forwarding")
    data = tmp / "data"
    args = (
        "--ray-replica-cpus",
        "1",
        "-w",
        "1",
        "-t",
        "1",
        "--max-lag",
        "60",
        "--data-dir",
        str(data),
    )
    forward = ("-f", f"http://127.0.0.1:{backend_port}/hook", "--forward-format", "json")
    with support.ray_server(tmp, 2, *args, *forward) as srv:
        yield srv, data


def test_finals_left_in_a_lost_replicas_outbox_are_delivered_by_its_replacement(
    forwarding_replicas: tuple[Server, Path], backend_port: int
) -> None:
    srv, data = forwarding_replicas
    jfk = load_audio(support.audio_root() / "jfk" / "jfk.flac")
    # The backend is down: both replicas keep their sessions' finals in their outboxes.
    results = concurrent_streams(srv.url, [jfk, jfk])
    names = {r.server for r in results}
    assert len(names) == 2, names
    reference = support.transcripts("jfk")["jfk.flac"]
    assert all(support.wer([reference], [r.text]) <= 0.1 for r in results), results
    finals = sorted(final["text"] for result in results for final in result.finals)
    assert sorted(p.name for p in (data / "replicas").iterdir()) == ["0", "1"]
    processes = support.ray_replica_processes()
    assert len(processes) == 2, processes
    for process in processes:  # both replicas lost before anything was delivered
        process.kill()
    with FakeBackend(port=backend_port) as backend:
        backend.wait_for_requests(len(finals), timeout=240)
        time.sleep(2.0)  # and nothing more: each final once
        delivered = sorted(json.loads(r.body)["text"] for r in backend.requests)
    assert delivered == finals
    # The replacements answer, and took the dead replicas' slots rather than new ones.
    assert len(support.replicas_answering(srv, 2, timeout=60, among=frozenset(names))) == 2
    assert sorted(p.name for p in (data / "replicas").iterdir()) == ["0", "1"]
