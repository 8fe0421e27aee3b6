"""whisperwire on Ray Serve (`serve --ray`): a local Ray cluster started by the server, two
replicas of the app behind Ray's proxy, streams of test-other clips through the proxy, and a
replica killed under its sessions.

Real Ray, no mocks. Without Ray (the `ray` extra) these tests skip on a developer's machine and
fail in CI (CI=true), where the lock installs it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import support
from support import (
    Server,
    StreamResult,
    concurrent_streams,
    librispeech_clips,
    load_audio,
    stream,
    wer,
)

from whisperwire.ray_proxy import LOST_REPLICA_CODE

pytestmark = pytest.mark.ray

REPLICA_TITLE = "ServeReplica:whisperwire:whisperwire"  # Ray's name for a replica's process


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`serve --ray` with two 1-thread replicas of the bundled model on this machine's cores."""
    tmp = tmp_path_factory.mktemp("ray")
    with support.ray_server(tmp, 2, "-w", "1", "-t", "1", "--max-lag", "60") as srv:
        yield srv


def server_of(result: StreamResult) -> str:
    ready = next(m for m in result.messages if m.get("state") == "ready")
    return ready["server"]


def test_four_streams_through_rays_proxy_match_the_single_process(
    ray_server: Server, server: Server
) -> None:
    """Two rounds of four concurrent real-time streams: each round spread over both replicas,
    and the transcripts within 1.10x the WER of the single-process server on the same clips."""
    clips = librispeech_clips(8)
    audio = [load_audio(path) for path, _ in clips]
    references = [reference for _, reference in clips]
    on_ray: list[StreamResult] = []
    for round_ in (audio[:4], audio[4:]):
        results = concurrent_streams(ray_server.url, round_)
        assert len({server_of(r) for r in results}) == 2, [server_of(r) for r in results]
        on_ray += results
    alone = concurrent_streams(server.url, audio[:4]) + concurrent_streams(server.url, audio[4:])
    for result in on_ray + alone:
        assert not result.errors, result.errors
        assert result.messages[-1]["type"] == "end"
    ray_wer = wer(references, [r.text for r in on_ray])
    single_wer = wer(references, [r.text for r in alone])
    assert ray_wer <= 1.10 * single_wer, (ray_wer, single_wer, [r.text for r in on_ray])


def test_a_killed_replica_closes_its_sessions_with_1012_and_ray_replaces_it(
    ray_server: Server,
) -> None:
    from websockets.sync.client import connect

    clips = librispeech_clips(4)
    before = support.replicas_answering(ray_server, 2, timeout=60)
    audio = load_audio(clips[0][0])
    sessions: list[tuple[Any, str]] = []
    with contextlib.ExitStack() as stack:
        for _ in range(6):  # six sessions: Ray spreads them over both replicas
            url = f"{ray_server.url}?encoding=f32le"
            ws = stack.enter_context(connect(url, max_size=None, open_timeout=30))
            sessions.append((ws, support.recv_json(ws)["server"]))
        held = {name for _, name in sessions}
        assert held == before, (held, before)
        for ws, _ in sessions:  # a second of speech each: every session has audio in hand
            ws.send(audio[:16000].astype("<f4").tobytes())
        replica_processes()[0].kill()
        time.sleep(3)  # Ray's proxy sees the replica gone within a fraction of a second
        closed = {name for ws, name in sessions if gone(ws)}
        assert len(closed) == 1, f"not one replica's sessions closed: {closed} of {held}"
        for ws, name in sessions:
            if name in closed:
                assert ws.close_code == LOST_REPLICA_CODE, (ws.close_code, ws.close_reason)
                continue
            # The other replica's sessions go on and end with their words.
            ws.send(audio[16000:].astype("<f4").tobytes())
            ws.send('{"type": "end"}')
            finals = []
            while (message := support.recv_json(ws, timeout=120))["type"] != "end":
                if message["type"] == "final":
                    finals.append(message["text"])
            assert wer([clips[0][1]], [" ".join(finals)]) < 0.3, finals
    # Ray replaces the replica; a new session is served.
    (fresh,) = support.replicas_answering(ray_server, 1, timeout=180, among=frozenset(before))
    result = stream(ray_server.url, load_audio(clips[1][0]))
    assert wer([clips[1][1]], [result.text]) < 0.3, result.text
    assert fresh not in before


def replica_processes() -> list[psutil.Process]:
    """The replicas' processes (Ray titles each with its deployment)."""
    found = [
        process
        for process in psutil.process_iter(["cmdline"])
        if REPLICA_TITLE in " ".join(process.info["cmdline"] or [])
    ]
    assert len(found) == 2, found
    return found


def gone(ws: Any) -> bool:
    """Whether the server has closed `ws` (its messages so far read and dropped)."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            ws.recv(timeout=0.5)
    except TimeoutError:
        return False
    except ConnectionClosed:
        return True
