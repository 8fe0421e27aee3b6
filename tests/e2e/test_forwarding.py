"""Forwarding finals to an HTTP backend, end to end: real server, real backends on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fake_backends import FakeBackend, Reply, free_port, json_reply, llama_handler, openai_handler
from support import (
    audio_root,
    librispeech_clips,
    load_audio,
    recv_json,
    session,
    start_server,
    stream,
)


def jfk() -> np.ndarray:
    return load_audio(audio_root() / "jfk" / "jfk.flac")


def forwarded_texts(backend: FakeBackend) -> list[str]:
    return [json.loads(r.body)["text"] for r in backend.requests]


def finals_of(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [f["text"] for f in result.finals]


def test_text_format_is_the_seeds_wire_form_in_batches_of_n(tmp_path: Path) -> None:
    with FakeBackend() as backend:
        server = start_server(
            tmp_path, "-f", backend.url("/hook"), "--forward-format", "text", "-nm", "2",
            "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        try:
            clips = [c for c in librispeech_clips(30) if len(c[1].split()) >= 25][:2]
            results: dict[int, object] = {}

            def run(i: int) -> None:
                results[i] = stream(server.url, load_audio(clips[i][0]), realtime=True)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            server.stop()
        requests = backend.requests
    sessions = {r.messages[0]["session_id"]: finals_of(r) for r in results.values()}  # type: ignore[attr-defined]
    assert all(len(finals) >= 3 for finals in sessions.values())
    by_session: dict[str, list[str]] = {sid: [] for sid in sessions}
    for request in requests:
        assert request.headers["content-type"] == "text/plain"
        sid = request.headers["x-connection-id"]
        lines = request.body.decode("utf-8").split("\n")
        assert by_session[sid] == [] or len(by_session[sid]) % 2 == 0, "only the last is short"
        assert 1 <= len(lines) <= 2
        by_session[sid] += lines
    for sid, finals in sessions.items():
        # Never shared: each session's batches hold exactly its own finals, in order.
        assert by_session[sid] == finals
        assert len([r for r in requests if r.headers["x-connection-id"] == sid]) == (
            (len(finals) + 1) // 2
        )


@pytest.mark.parametrize(
    ("path", "handler", "prefix"),
    [
        ("/completion", llama_handler, "LLAMA[64]:"),
        ("/v1/chat/completions", openai_handler, "OPENAI[tiny-llm]:"),
    ],
)
def test_llm_reply_is_relayed_to_the_client(tmp_path: Path, path, handler, prefix) -> None:  # type: ignore[no-untyped-def]
    with FakeBackend(handler) as backend:
        server = start_server(
            tmp_path, "-f", backend.url(path), "-nm", "100", "--forward-n-predict", "64",
            "--forward-model", "tiny-llm", "--forward-prompt", "Answer: {text}",
            "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        try:
            result = stream(server.url, jfk())
        finally:
            server.stop()
    forwards = [m for m in result.messages if m["type"] == "forward"]
    assert len(forwards) == 1, result.messages
    reply = forwards[0]
    assert reply["status"] == 200 and reply["error"] is None
    spoken = "\n".join(finals_of(result))
    assert reply["response"] == f"{prefix}Answer: {spoken}"
    assert len(backend.requests) == 1


def test_backend_down_then_up_delivers_every_final_once_in_order(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(
        tmp_path, "-f", f"http://127.0.0.1:{port}/hook", "--data-dir", str(tmp_path / "data")
    )
    backend = FakeBackend(port=port)
    try:
        samples = load_audio(audio_root() / "longform" / "ls_test_other_1688-142285_0000-0009.flac")
        timer = threading.Timer(20.0, backend.start)
        timer.start()
        result = stream(server.url, samples[: 16000 * 26], realtime=True)
        timer.join()
        finals = finals_of(result)
        assert len(finals) >= 5
        deadline = time.monotonic() + 90
        while len(backend.requests) < len(finals) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)  # nothing more may arrive: exactly once
        assert forwarded_texts(backend) == finals
    finally:
        server.stop()
        backend.stop()


def test_sigkill_while_backend_down_then_restart_delivers_pending_once(tmp_path: Path) -> None:
    port = free_port()
    args = ("-f", f"http://127.0.0.1:{port}/hook", "--data-dir", str(tmp_path / "data"))
    server = start_server(tmp_path, *args)
    try:
        result = stream(server.url, jfk())
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finals = finals_of(result)
    assert finals
    with FakeBackend(port=port) as backend:
        restarted = start_server(tmp_path, *args)
        try:
            backend.wait_for_requests(len(finals), timeout=60)
            time.sleep(2.0)
            assert forwarded_texts(backend) == finals
        finally:
            restarted.stop()
        again = start_server(tmp_path, *args)  # a third start has nothing left to send
        try:
            time.sleep(3.0)
            assert forwarded_texts(backend) == finals
        finally:
            again.stop()


def test_a_400_is_relayed_and_not_retried(tmp_path: Path) -> None:
    def refuse(_request):  # type: ignore[no-untyped-def]
        return json_reply({"error": "prompt too long"}, 400)

    with FakeBackend(refuse) as backend:
        server = start_server(
            tmp_path, "-f", backend.url("/hook"), "-nm", "100",
            "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        try:
            result = stream(server.url, jfk())
            time.sleep(2.0)
        finally:
            server.stop()
    forwards = [m for m in result.messages if m["type"] == "forward"]
    assert len(forwards) == 1
    assert forwards[0]["status"] == 400 and forwards[0]["error"]
    assert "prompt too long" in json.dumps(forwards[0])
    assert len(backend.requests) == 1


def test_sigterm_finalises_open_speech_and_delivers_before_exit(tmp_path: Path) -> None:
    slow = Reply(200, b'{"ok": true}', {"Content-Type": "application/json"})

    def handler(_request):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        return slow

    with FakeBackend(handler) as backend:
        server = start_server(
            tmp_path, "-f", backend.url("/hook"), "-nm", "3",
            "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        samples = jfk()
        pcm = (samples * 32767).astype("<i2").tobytes()
        finals: list[str] = []
        with session(server.url) as ws:
            assert recv_json(ws)["state"] == "ready"
            for i in range(0, len(pcm) - 16000, 3200):  # all but the last half second
                ws.send(pcm[i : i + 3200])
                time.sleep(0.1)
            server.process.send_signal(signal.SIGTERM)  # mid-session, no `end` from us
            while (message := recv_json(ws, timeout=60))["type"] != "end":
                if message["type"] == "final":
                    finals.append(message["text"])
        assert server.process.wait(60) == 0
        delivered = forwarded_texts(backend)
    assert finals and "country" in " ".join(finals).lower(), finals
    assert "\n".join(delivered).split("\n") == finals
    assert os.path.exists(tmp_path / "data")
