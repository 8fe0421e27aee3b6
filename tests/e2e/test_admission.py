"""Admission control on a real server with its default --max-lag: the streams it can carry
are admitted, the next one is refused at connect, and the admitted ones keep working."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
from support import (
    Server,
    audio_root,
    load_audio,
    recv_json,
    session,
    start_server,
    stream,
    transcripts,
    wer,
)
from websockets.exceptions import ConnectionClosed


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    audio_root()
    srv = start_server(tmp_path_factory.mktemp("admission"))
    yield srv
    srv.stop()


def load_status(server: Server) -> dict[str, float]:
    health = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).json()
    return health["load"]


def wait_for_headroom(server: Server, wanted: int) -> None:
    """A closed connection leaves the count when the server has seen it close."""
    deadline = time.monotonic() + 10
    while load_status(server)["headroom"] < wanted:
        assert time.monotonic() < deadline, load_status(server)
        time.sleep(0.05)


def test_streams_past_capacity_are_refused_and_the_admitted_keep_working(
    fresh_server: Server,
) -> None:
    status = load_status(fresh_server)
    capacity = status["capacity"]
    assert capacity >= 1, status
    assert status["headroom"] == capacity and status["live_streams"] == 0
    with contextlib.ExitStack() as stack:
        admitted = [stack.enter_context(session(fresh_server.url)) for _ in range(capacity)]
        for ws in admitted:
            assert recv_json(ws)["state"] == "ready"
        assert load_status(fresh_server)["headroom"] == 0

        with session(fresh_server.url) as refused:
            error = recv_json(refused)
            assert error["code"] == "OVERLOADED", error
            assert f"capacity of {capacity} live streams" in error["message"]
            assert error["retry_after"] > 0
            with pytest.raises(ConnectionClosed) as info:
                recv_json(refused)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        assert load_status(fresh_server)["refused"] == 1

        admitted.pop().close()  # one leaves: there is room again
        wait_for_headroom(fresh_server, 1)
        with session(fresh_server.url) as again:
            assert recv_json(again)["state"] == "ready"
            again.close()

    # Everyone left: a stream is admitted and transcribed as ever.
    wait_for_headroom(fresh_server, capacity)
    samples = load_audio(audio_root() / "jfk" / "jfk.flac")
    result = stream(fresh_server.url, samples)
    assert wer([transcripts("jfk")["jfk.flac"]], [result.text]) <= 0.1
