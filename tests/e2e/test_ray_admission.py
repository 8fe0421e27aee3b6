"""Admission across Ray Serve replicas (`serve --ray`): new sessions go where there is room,
and with none anywhere a replica refuses the session with OVERLOADED instead of Ray queueing
it. Two replicas that carry one live stream each (`--max-lag 0.2` leaves one stream per
worker), a real local Ray cluster, no mocks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import support
from support import Server

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def one_stream_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ray-admission")
    with support.ray_server(
        tmp, 2, "--ray-replica-cpus", "1", "-w", "1", "-t", "1", "--max-lag", "0.2"
    ) as srv:
        yield srv


def open_at_once(url: str, n: int, stack: contextlib.ExitStack) -> list[tuple[Any, dict[str, Any]]]:
    """`n` sessions whose handshakes start together, each with its first message."""
    from websockets.sync.client import connect

    opened: list[tuple[Any, dict[str, Any]]] = []
    start = threading.Barrier(n)
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        ws = connect(f"{url}?encoding=f32le", max_size=None, open_timeout=30)
        with lock:
            stack.enter_context(ws)
        first = support.recv_json(ws)
        with lock:
            opened.append((ws, first))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == n, opened
    return opened


def test_sessions_go_where_there_is_room_and_the_one_too_many_is_refused(
    one_stream_replicas: Server,
) -> None:
    from websockets.exceptions import ConnectionClosed

    url = one_stream_replicas.url
    for _ in range(2):  # and again once those sessions are gone
        with contextlib.ExitStack() as stack:
            pair = open_at_once(url, 2, stack)
            assert [first["state"] for _, first in pair] == ["ready", "ready"], pair
            assert len({first["server"] for _, first in pair}) == 2, pair
            with support.session(url, "encoding=f32le") as extra:
                refusal = support.recv_json(extra)
                assert (refusal["type"], refusal["code"]) == ("error", "OVERLOADED"), refusal
                assert refusal["retry_after"] > 0
                with pytest.raises(ConnectionClosed):
                    extra.recv(timeout=10)
                assert extra.close_code == 1013
            for ws, _ in pair:
                ws.send('{"type": "end"}')
                assert support.recv_json(ws, timeout=60, skip=("partial", "final"))["type"] == "end"
        time.sleep(2)  # the replicas report their room again (every second)
