"""Stopping `serve --ray` (SIGTERM) finalises the sessions as one process does: the audio a
client sent comes back as finals and `end`, then close 1001, before Ray stops the replicas.
Real Ray, no mocks; a cluster of its own, as the test stops it."""

from __future__ import annotations

import pytest
import support
from support import librispeech_clips, load_audio, wer

pytestmark = pytest.mark.ray


def test_stopping_the_app_finalises_what_its_sessions_received(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ((clip, reference),) = librispeech_clips(1)  # 15 s of speech
    samples = load_audio(clip)
    tmp = tmp_path_factory.mktemp("ray-stop")
    finals: list[str] = []
    with support.ray_server(tmp, 1, "--ray-replica-cpus", "2") as srv:
        with connect(srv.url + "?encoding=f32le", max_size=None, open_timeout=30) as ws:
            assert support.recv_json(ws)["state"] == "ready"
            ws.send(samples.astype("<f4").tobytes())  # no `end`: the server ends it
            messages = [support.recv_json(ws, timeout=60, skip=())]  # words are in hand
            assert messages[0]["type"] in ("partial", "final"), messages
            srv.process.terminate()  # SIGTERM, as Ctrl-C or a service manager
            try:
                while True:
                    messages.append(support.recv_json(ws, timeout=60, skip=("partial",)))
            except ConnectionClosed:
                pass
            finals = [m["text"] for m in messages if m["type"] == "final"]
            assert messages and messages[-1]["type"] == "end", messages
            assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
        srv.process.wait(60)
    assert wer([reference], [" ".join(finals)]) < 0.3, finals
