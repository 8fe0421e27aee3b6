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


def test_a_session_whose_replica_died_is_taken_over_only_where_there_is_room(
    one_stream_replicas: Server,
) -> None:
    """Each replica holds one session, all it carries; the replica under one is killed. Its
    client's resume lands on the other, full one and is refused with OVERLOADED (the journal
    stays on the board); once the other session ends, the resume is taken over there (or on
    the replica Ray started meanwhile) with its finals: none again, none missing."""
    url = one_stream_replicas.url
    before = support.replicas_answering(one_stream_replicas, 2, timeout=180)
    recording = support.audio_root() / "longform" / "ls_test_other_1998-15444_0000-0009.flac"
    samples = support.load_audio(recording)
    cut = 30 * 16000  # sent before the replica dies
    with contextlib.ExitStack() as stack:
        pair = open_at_once(url, 2, stack)
        assert len({first["server"] for _, first in pair}) == 2, pair
        for ws, _ in pair:
            ws.send(samples[:cut].astype("<f4").tobytes())
        finals_of: dict[str, dict[int, str]] = {}
        for ws, first in pair:  # the board has a final of each (a final leaves once it has)
            finals_of[first["session_id"]] = {}
            while not finals_of[first["session_id"]]:
                message = support.recv_json(ws, timeout=120)
                if message["type"] == "final":
                    finals_of[first["session_id"]][message["segment_id"]] = message["text"]
        support.ray_replica_processes()[0].kill()
        time.sleep(3)
        closed = [(ws, first) for ws, first in pair if support.gone(ws)]
        assert len(closed) == 1, closed
        ((lost_ws, lost),) = closed
        assert lost_ws.close_code == 1012, (lost_ws.close_code, lost_ws.close_reason)
        (survivor,) = [ws for ws, first in pair if first is not lost]
        lost_id = lost["session_id"]
        finals = finals_of[lost_id]  # those read before the close (`gone` drops the rest)
        last = max(finals)
        query = f"encoding=f32le&resume={lost_id}&last_segment={last}"
        # the survivor streams on: a session that sent nothing since its first 30 s stops
        # counting as a live stream 10 s after they are decoded, and its replica has room
        survivor.send(samples[cut : cut + 16000].astype("<f4").tobytes())
        with support.session(url, query) as ws:  # the survivor's replica has no room
            refusal = support.recv_json(ws, timeout=60)
            assert (refusal["type"], refusal.get("code")) == ("error", "OVERLOADED"), refusal
        survivor.send('{"type": "end"}')
        assert support.recv_json(survivor, timeout=120, skip=("partial", "final"))["type"] == "end"
    deadline = time.monotonic() + 30  # the replicas report their room again every second
    while True:
        with support.session(url, query) as ws:
            greeting = support.recv_json(ws, timeout=60)
            if greeting["type"] == "error" and time.monotonic() < deadline:
                time.sleep(1)
                continue
            assert greeting.get("resumed") is True and greeting["session_id"] == lost_id, greeting
            offset = int(round(greeting["audio_offset"] * 16000))
            assert 0 <= offset <= cut, (offset, cut)
            ws.send(samples[offset:].astype("<f4").tobytes())
            ws.send('{"type": "end"}')
            while (message := support.recv_json(ws, timeout=180))["type"] != "end":
                if message["type"] == "final":
                    assert message["segment_id"] > last, f"final {message} came again"
                    finals[message["segment_id"]] = message["text"]
            break
    assert sorted(finals) == list(range(len(finals))), "no segment missing"
    reference = support.transcripts("longform")[recording.name]
    assert support.wer([reference], [" ".join(finals[i] for i in sorted(finals))]) < 0.3, finals
    support.replicas_answering(one_stream_replicas, 1, timeout=180, among=frozenset(before))
