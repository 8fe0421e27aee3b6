"""Tests of whisperwire.forward against real HTTP servers on 127.0.0.1 (no httpx mocks)."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_backends import (
    FakeBackend,
    RecordedRequest,
    Reply,
    free_port,
    json_reply,
    llama_handler,
    openai_handler,
)
from forward_support import Inbox, by_session, make_config, read_outbox, seg, wait_until
from prometheus_client import CollectorRegistry

from whisperwire.forward import Forwarder, PrometheusForwardMetrics

SRC = Path(__file__).resolve().parents[2] / "src"


# ----------------------------------------------------------------------------- formats


def test_text_format_is_the_seed_wire_form_in_batches_of_n(tmp_path: Path) -> None:
    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, format="text", max_messages=3))
        await fw.start()
        for i in range(7):
            await fw.add_final("sess-1", seg(i, f"line {i}"))
        await wait_until(lambda: len(backend.requests) >= 2, what="two full batches")
        await asyncio.sleep(0.3)  # the 7th final waits for more finals or a flush
        assert len(backend.requests) == 2
        assert fw.stats()["open_batches"] == 1
        await fw.flush("sess-1")
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with FakeBackend() as backend:
        asyncio.run(main(backend))
    reqs = backend.requests
    assert [r.text() for r in reqs] == [
        "line 0\nline 1\nline 2",
        "line 3\nline 4\nline 5",
        "line 6",
    ]
    for r in reqs:
        assert r.method == "POST"
        assert r.path == "/hook"
        assert r.headers["content-type"] == "text/plain"
        assert r.headers["x-connection-id"] == "sess-1"
    assert len({r.headers["idempotency-key"] for r in reqs}) == 3
    assert read_outbox(tmp_path) == []


def test_concurrent_sessions_never_share_a_batch(tmp_path: Path) -> None:
    async def client(fw: Forwarder, name: str) -> None:
        for i in range(9):
            await fw.add_final(name, seg(i, f"{name}:{i}"))
            await asyncio.sleep(0)  # interleave the two sessions
        await fw.end_session(name)

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, format="text", max_messages=3))
        await fw.start()
        await asyncio.gather(client(fw, "alice"), client(fw, "bob"))
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with FakeBackend() as backend:
        asyncio.run(main(backend))
    sessions = by_session(backend.requests)
    assert set(sessions) == {"alice", "bob"}
    for name, reqs in sessions.items():
        assert len(reqs) == 3
        lines = [line for r in reqs for line in r.text().split("\n")]
        assert lines == [f"{name}:{i}" for i in range(9)]  # own finals only, in order


def test_json_format_and_reply_relayed_to_the_session(tmp_path: Path) -> None:
    inbox = Inbox()

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, max_messages=2))
        assert fw.format == "json"
        await fw.start()
        fw.attach("s-json", inbox.send)
        for i, text in enumerate(["hello", " world", "bye"]):
            await fw.add_final("s-json", seg(i, text))
        await fw.add_final("s-json", seg(9, "   "))  # blank finals are not forwarded
        await fw.end_session("s-json", wait_s=10)  # the client said "end": wait for replies
        assert len(inbox.messages) == 2
        await fw.close()

    with FakeBackend() as backend:
        asyncio.run(main(backend))
    reqs = backend.requests
    assert [r.headers["content-type"] for r in reqs] == ["application/json"] * 2
    assert reqs[0].json() == {
        "session_id": "s-json",
        "batch": 0,
        "segments": [seg(0, "hello"), seg(1, " world")],
        "text": "hello\n world",
    }
    assert reqs[1].json() == {
        "session_id": "s-json",
        "batch": 1,
        "segments": [seg(2, "bye")],
        "text": "bye",
    }
    first, second = inbox.messages
    assert first == {
        "type": "forward",
        "batch": 0,
        "segment_ids": [0, 1],
        "status": 200,
        "response": {"ok": True, "received": len(reqs[0].body)},
        "error": None,
    }
    assert second["batch"] == 1 and second["status"] == 200 and second["error"] is None


def test_llama_completion(tmp_path: Path) -> None:
    inbox = Inbox()

    async def main(backend: FakeBackend) -> None:
        cfg = make_config(
            backend.url("/completion"),
            tmp_path,
            prompt_template="User: {text}\nAssistant:",
            llama_n_predict=16,
        )
        fw = Forwarder(cfg)
        assert fw.format == "llama"
        await fw.start()
        fw.attach("s-llama", inbox.send)
        await fw.add_final("s-llama", seg(0, "what time is it"))
        await wait_until(lambda: len(inbox.messages) == 1, what="llama reply")
        await fw.close()

    with FakeBackend(llama_handler) as backend:
        asyncio.run(main(backend))
    (req,) = backend.requests
    assert req.json() == {
        "prompt": "User: what time is it\nAssistant:",
        "n_predict": 16,
        "stream": False,
    }
    (msg,) = inbox.messages
    assert msg["type"] == "forward"
    assert msg["status"] == 200
    assert msg["error"] is None
    assert msg["response"] == "LLAMA[16]:User: what time is it\nAssistant:"
    assert msg["body"]["content"] == msg["response"]


def test_openai_chat_completions_with_api_key_header(tmp_path: Path) -> None:
    inbox = Inbox()

    async def main(backend: FakeBackend) -> None:
        cfg = make_config(
            backend.url("/v1/chat/completions"),
            tmp_path,
            openai_model="tiny-model",
            headers=["Authorization: Bearer sk-test"],
            max_messages=2,
        )
        fw = Forwarder(cfg)
        assert fw.format == "openai"
        await fw.start()
        fw.attach("s-oa", inbox.send)
        await fw.add_final("s-oa", seg(0, "hello"))
        await fw.add_final("s-oa", seg(1, "there"))
        await wait_until(lambda: len(inbox.messages) == 1, what="openai reply")
        await fw.close()

    with FakeBackend(openai_handler) as backend:
        asyncio.run(main(backend))
    (req,) = backend.requests
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.json() == {
        "model": "tiny-model",
        "messages": [{"role": "user", "content": "hello\nthere"}],
    }
    (msg,) = inbox.messages
    assert msg["status"] == 200
    assert msg["error"] is None
    assert msg["response"] == "OPENAI[tiny-model]:hello\nthere"
    assert msg["body"]["choices"][0]["message"]["role"] == "assistant"


def test_llama_reply_without_content_is_reported_not_retried(tmp_path: Path) -> None:
    inbox = Inbox()

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/completion"), tmp_path))
        await fw.start()
        fw.attach("s", inbox.send)
        await fw.add_final("s", seg(0, "hi"))
        await wait_until(lambda: len(inbox.messages) == 1)
        await fw.close()

    with FakeBackend(lambda req: json_reply({"unexpected": True})) as backend:
        asyncio.run(main(backend))
    (msg,) = inbox.messages
    assert msg["status"] == 200 and msg["response"] is None
    assert "content" in msg["error"]
    assert msg["body"] == {"unexpected": True}
    assert len(backend.requests) == 1
    assert read_outbox(tmp_path) == []  # the backend accepted it: delivered


# ----------------------------------------------------------------------------- delivery


def test_backend_down_then_up_delivers_everything_once_in_order(tmp_path: Path) -> None:
    port = free_port()
    backend = FakeBackend(port=port)

    async def main() -> None:
        fw = Forwarder(make_config(f"http://127.0.0.1:{port}/hook", tmp_path, max_messages=2))
        await fw.start()
        for i in range(5):
            for name in ("A", "B"):
                await fw.add_final(name, seg(i, f"{name}{i}"))
        await fw.flush("A")
        await fw.flush("B")
        await wait_until(lambda: fw.stats()["retries"] >= 6, what="retries while down")
        assert backend.requests == []
        assert fw.stats()["outbox_depth"] == 6
        assert len(read_outbox(tmp_path, state="pending")) == 6
        backend.start()
        assert await fw.drain(timeout_s=15)
        stats = fw.stats()
        assert stats["batches_sent"] == 6 and stats["outbox_depth"] == 0
        await fw.close()

    try:
        asyncio.run(main())
    finally:
        backend.stop()
    sessions = by_session(backend.requests)
    assert len(backend.requests) == 6
    for name in ("A", "B"):
        bodies = [r.json() for r in sessions[name]]
        assert [b["batch"] for b in bodies] == [0, 1, 2]
        texts = [s["text"] for b in bodies for s in b["segments"]]
        assert texts == [f"{name}{i}" for i in range(5)]
    assert read_outbox(tmp_path) == []


_KILLED_CHILD = """
import asyncio, sys
from pathlib import Path
from whisperwire.forward import ForwardConfig, Forwarder

async def main() -> None:
    fw = Forwarder(ForwardConfig(
        url=sys.argv[1], data_dir=Path(sys.argv[2]), format="json", max_messages=2,
        trust_env=False, initial_backoff_s=0.02, max_backoff_s=0.1,
    ))
    await fw.start()
    for i in range(5):
        await fw.add_final("s1", {"segment_id": i, "text": f"s1-{i}", "start": i, "end": i + 1})
    for i in range(3):
        await fw.add_final("s2", {"segment_id": i, "text": f"s2-{i}", "start": i, "end": i + 1})
    while fw.stats()["retries"] < 3:
        await asyncio.sleep(0.01)
    print("READY", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child printed nothing within {timeout}s")
    return proc.stdout.readline().strip()


def test_sigkilled_forwarder_outbox_is_delivered_once_after_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    data_dir = tmp_path / "data"
    script = tmp_path / "child.py"
    script.write_text(_KILLED_CHILD)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert _read_line(proc, timeout=30) == "READY"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    left = read_outbox(data_dir)
    assert [(b["session_id"], b["seq"], b["state"]) for b in left] == [
        ("s1", 0, "pending"),
        ("s1", 1, "pending"),
        ("s1", 2, "open"),  # not yet full batches survive the kill too
        ("s2", 0, "pending"),
        ("s2", 1, "open"),
    ]
    assert any(b["attempts"] > 0 for b in left)
    keys = {(b["session_id"], b["seq"]): b["key"] for b in left}

    async def restart() -> None:
        fw = Forwarder(make_config(url, data_dir, format="json", max_messages=2))
        await fw.start()
        assert await fw.drain(timeout_s=15)
        await fw.close()

    with FakeBackend(port=port) as backend:
        asyncio.run(restart())
        assert len(backend.requests) == 5
        asyncio.run(restart())  # nothing is left to send a second time
        assert len(backend.requests) == 5

    sessions = by_session(backend.requests)
    expected = {"s1": ["s1-0\ns1-1", "s1-2\ns1-3", "s1-4"], "s2": ["s2-0\ns2-1", "s2-2"]}
    for name, texts in expected.items():
        bodies = [r.json() for r in sessions[name]]
        assert [b["text"] for b in bodies] == texts
        assert [b["batch"] for b in bodies] == list(range(len(texts)))
        # the Idempotency-Key is the one persisted before the kill
        assert [r.headers["idempotency-key"] for r in sessions[name]] == [
            keys[(name, i)] for i in range(len(texts))
        ]
    assert read_outbox(data_dir) == []


def test_400_is_not_retried_and_kept_as_failed(tmp_path: Path) -> None:
    inbox = Inbox()

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path))
        await fw.start()
        fw.attach("s", inbox.send)
        await fw.add_final("s", seg(0, "rejected"))
        await wait_until(lambda: len(inbox.messages) == 1)
        await asyncio.sleep(0.3)  # time for several retries, were it retried
        assert len(backend.requests) == 1
        await fw.add_final("s", seg(1, "accepted"))  # the session's lane goes on
        await wait_until(lambda: len(inbox.messages) == 2)
        stats = fw.stats()
        assert (stats["batches_failed"], stats["batches_sent"], stats["retries"]) == (1, 1, 0)
        await fw.close()

    with FakeBackend() as backend:
        backend.script(json_reply({"error": "bad request"}, status=400))
        asyncio.run(main(backend))
        assert len(backend.requests) == 2
        failed, ok = inbox.messages
        assert failed["status"] == 400
        assert "400" in failed["error"]
        assert failed["response"] == {"error": "bad request"}
        assert ok["status"] == 200 and ok["error"] is None

        (row,) = read_outbox(tmp_path)
        assert row["state"] == "failed"
        assert row["last_status"] == 400
        assert row["attempts"] == 1
        assert [s["text"] for s in row["segments"]] == ["rejected"]

        async def restart() -> None:
            fw = Forwarder(make_config(backend.url("/hook"), tmp_path))
            await fw.start()
            assert fw.stats()["failed_in_outbox"] == 1
            assert await fw.drain(timeout_s=5)
            await fw.close()

        asyncio.run(restart())
        assert len(backend.requests) == 2  # failed batches are not re-sent automatically


def test_503_retried_in_order_and_delivered_once(tmp_path: Path) -> None:
    inbox = Inbox()

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, format="text"))
        await fw.start()
        fw.attach("s", inbox.send)
        for i in range(3):
            await fw.add_final("s", seg(i, f"t{i}"))
        assert await fw.drain("s", timeout_s=10)
        stats = fw.stats()
        assert (stats["batches_sent"], stats["retries"], stats["batches_failed"]) == (3, 2, 0)
        await fw.close()

    with FakeBackend() as backend:
        backend.script(Reply(503, b"busy"), Reply(502, b"bad gateway"))
        asyncio.run(main(backend))
    # batch 1 and 2 wait until batch 0 got through
    assert [r.text() for r in backend.requests] == ["t0", "t0", "t0", "t1", "t2"]
    assert [(m["batch"], m["status"], m["error"]) for m in inbox.messages] == [
        (0, 200, None),
        (1, 200, None),
        (2, 200, None),
    ]
    assert read_outbox(tmp_path) == []


def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    async def main(backend: FakeBackend) -> None:
        cfg = make_config(backend.url("/hook"), tmp_path, initial_backoff_s=0.01)
        fw = Forwarder(cfg)
        await fw.start()
        await fw.add_final("s", seg(0, "x"))
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with FakeBackend() as backend:
        backend.script(json_reply({"error": "slow down"}, status=429, headers={"Retry-After": "1"}))
        asyncio.run(main(backend))
    first, second = backend.requests
    assert second.received_at - first.received_at >= 0.9


def test_max_attempts_gives_up_and_keeps_the_batch(tmp_path: Path) -> None:
    inbox = Inbox()
    url = f"http://127.0.0.1:{free_port()}/hook"

    async def main() -> None:
        fw = Forwarder(make_config(url, tmp_path, max_attempts=3))
        await fw.start()
        fw.attach("s", inbox.send)
        await fw.add_final("s", seg(0, "x"))
        await wait_until(lambda: len(inbox.messages) == 1)
        await fw.close()

    asyncio.run(main())
    (msg,) = inbox.messages
    assert msg["status"] is None and "gave up after 3 attempts" in msg["error"]
    (row,) = read_outbox(tmp_path)
    assert (row["state"], row["attempts"]) == ("failed", 3)


# ----------------------------------------------------------------------------- shutdown


def test_close_sends_open_batches_when_backend_is_up(tmp_path: Path) -> None:
    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, format="text", max_messages=5))
        await fw.start()
        for i in range(2):
            await fw.add_final("one", seg(i, f"one{i}"))
        for i in range(3):
            await fw.add_final("two", seg(i, f"two{i}"))
        await asyncio.sleep(0.1)
        assert backend.requests == []  # batches are open, not full
        await fw.close(timeout_s=10)
        assert len(backend.requests) == 2  # sent before close returned

    with FakeBackend() as backend:
        asyncio.run(main(backend))
    assert sorted(r.text() for r in backend.requests) == ["one0\none1", "two0\ntwo1\ntwo2"]
    assert read_outbox(tmp_path) == []


def test_close_with_backend_down_leaves_batches_for_the_next_run(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"

    async def first_run() -> None:
        fw = Forwarder(make_config(url, tmp_path, format="text", max_messages=2))
        await fw.start()
        for i in range(3):
            await fw.add_final("s", seg(i, f"t{i}"))
        started = time.monotonic()
        await fw.close(timeout_s=0.5)
        assert time.monotonic() - started < 5
        with pytest.raises(RuntimeError):
            await fw.add_final("s", seg(9, "too late"))

    asyncio.run(first_run())
    rows = read_outbox(tmp_path)
    assert [(r["seq"], r["state"]) for r in rows] == [(0, "pending"), (1, "pending")]

    async def second_run() -> None:
        fw = Forwarder(make_config(url, tmp_path, format="text", max_messages=2))
        await fw.start()
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with FakeBackend(port=port) as backend:
        asyncio.run(second_run())
    assert [r.text() for r in backend.requests] == ["t0\nt1", "t2"]
    assert read_outbox(tmp_path) == []


# ----------------------------------------------------------------------------- misc


def test_add_final_does_not_wait_for_a_slow_backend(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(req: RecordedRequest) -> Reply:
        release.wait(20)
        return json_reply({"ok": True})

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, format="text"))
        await fw.start()
        started = time.monotonic()
        for i in range(5):
            await fw.add_final("s", seg(i, f"t{i}"))
        assert time.monotonic() - started < 3  # generous; it is milliseconds
        await wait_until(lambda: len(backend.requests) == 1)
        assert fw.stats()["pending_batches"] == 5
        assert len(read_outbox(tmp_path)) == 5  # all durable already
        release.set()
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with FakeBackend(slow) as backend:
        try:
            asyncio.run(main(backend))
        finally:
            release.set()
    assert [r.text() for r in backend.requests] == [f"t{i}" for i in range(5)]


def test_reply_for_a_gone_client_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()

    async def broken_send(msg: dict[str, Any]) -> None:
        raise ConnectionError("websocket closed")

    async def main(backend: FakeBackend) -> None:
        fw = Forwarder(make_config(backend.url("/completion"), tmp_path))
        await fw.start()
        fw.attach("gone", inbox.send)
        fw.detach("gone")
        await fw.add_final("gone", seg(0, "anyone there"))
        fw.attach("broken", broken_send)
        await fw.add_final("broken", seg(0, "hello"))
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with (
        caplog.at_level(logging.INFO, logger="whisperwire.forward"),
        FakeBackend(llama_handler) as backend,
    ):
        asyncio.run(main(backend))
    assert inbox.messages == []
    assert "LLAMA[256]:anyone there" in caplog.text
    assert "LLAMA[256]:hello" in caplog.text
    assert "websocket closed" in caplog.text


def test_second_forwarder_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = make_config("http://127.0.0.1:9/hook", tmp_path)
        first = Forwarder(cfg)
        await first.start()
        with pytest.raises(RuntimeError, match="in use"):
            await Forwarder(cfg).start()
        await first.close()
        again = Forwarder(cfg)  # the lock is released by close()
        await again.start()
        await again.close()

    asyncio.run(main())


def test_prometheus_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()

    async def main(backend: FakeBackend) -> None:
        metrics = PrometheusForwardMetrics(registry)
        fw = Forwarder(make_config(backend.url("/hook"), tmp_path, max_messages=2), metrics=metrics)
        await fw.start()
        await fw.add_final("s", seg(0, "a"))
        assert registry.get_sample_value("whisperwire_forward_outbox_depth") == 1
        await fw.add_final("s", seg(1, "b"))
        assert await fw.drain(timeout_s=10)
        await fw.close()

    with FakeBackend() as backend:
        backend.script(Reply(503, b""))
        asyncio.run(main(backend))
    assert registry.get_sample_value("whisperwire_forward_batches_sent_total") == 1
    assert registry.get_sample_value("whisperwire_forward_retries_total") == 1
    assert registry.get_sample_value("whisperwire_forward_batches_failed_total") == 0
    assert registry.get_sample_value("whisperwire_forward_outbox_depth") == 0


def test_end_does_not_wait_for_a_backend_that_is_down(tmp_path: Path) -> None:
    """With the backend down, `end_session` returns at the first failed attempt, not after
    its wait: the client's `end` is not held back; the finals stay in the outbox."""
    port = free_port()  # nothing listens: every attempt fails at once

    async def main() -> float:
        fw = Forwarder(make_config(f"http://127.0.0.1:{port}/hook", tmp_path, max_messages=1))
        await fw.start()
        await fw.add_final("A", seg(0, "first words"))
        started = asyncio.get_running_loop().time()
        await fw.end_session("A", wait_s=30.0)
        waited = asyncio.get_running_loop().time() - started
        assert fw.stats()["outbox_depth"] == 1
        await fw.close(timeout_s=0.5)
        return waited

    assert asyncio.run(main()) < 5.0
    assert len(read_outbox(tmp_path, state="pending")) == 1
