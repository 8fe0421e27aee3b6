"""GET /metrics end to end: a real server on the bundled model, real speech, a real scrape
parsed as Prometheus parses it; the counters move by what the sessions did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fake_backends import FakeBackend, json_reply
from prometheus_client.parser import text_string_to_metric_families
from support import (
    Server,
    audio_message,
    audio_root,
    load_audio,
    recv_json,
    session,
    start_server,
    stream,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STREAM_KINDS = ("partial", "commit", "final", "cap")


def jfk() -> np.ndarray:
    return load_audio(audio_root() / "jfk" / "jfk.flac")


def get_metrics(server: Server, **headers: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}/metrics", headers=headers, timeout=30)


def scrape(server: Server, **headers: str) -> Samples:
    """Every sample of /metrics: (name, labels) -> value."""
    response = get_metrics(server, **headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_one_streamed_session_moves_the_counters_by_what_it_did(server: Server) -> None:
    samples = jfk()
    before = scrape(server)
    result = stream(server.url, samples)
    after = scrape(server)
    assert result.messages[-1]["type"] == "end" and not result.errors
    assert moved(before, after, "whisperwire_sessions_total", protocol="json") == 1
    assert moved(before, after, "whisperwire_sessions_total", protocol="text") == 0
    received = moved(before, after, "whisperwire_audio_received_seconds_total")
    assert received == pytest.approx(len(samples) / 16000, abs=0.1)  # within a frame
    # Every decode job is in its kind's counter and its histogram; the session's windows were
    # live-stream jobs, none a clip's.
    jobs = {k: moved(before, after, "whisperwire_decode_jobs_total", kind=k) for k in STREAM_KINDS}
    for kind, count in jobs.items():
        timed = moved(before, after, "whisperwire_decode_duration_seconds_count", kind=kind)
        assert timed == count, kind
    assert jobs["partial"] > 0 and jobs["final"] + jobs["cap"] > 0, jobs
    assert moved(before, after, "whisperwire_decode_jobs_total", kind="clip") == 0
    # One lag per final the client received.
    finals = moved(before, after, "whisperwire_final_lag_seconds_count")
    assert finals == len(result.finals) > 0
    assert moved(before, after, "whisperwire_final_lag_seconds_sum") > 0
    # The real-time factor: live-stream decode seconds per second of live audio, so far.
    decoded = sum(
        value(after, "whisperwire_decode_duration_seconds_sum", kind=k) for k in STREAM_KINDS
    )
    audio = value(after, "whisperwire_audio_received_seconds_total")
    assert value(after, "whisperwire_realtime_factor") == pytest.approx(decoded / audio)
    assert value(after, "whisperwire_scheduler_queue_depth") == 0  # nothing left to decode
    assert moved(before, after, "whisperwire_errors_total", code="UNKNOWN_MESSAGE_TYPE") == 0


def test_errors_clips_and_open_sessions_by_protocol(server: Server) -> None:
    before = scrape(server)
    with session(server.url) as ws, session(server.url, "format=text") as text:
        assert recv_json(ws)["state"] == "ready"
        assert text.recv(timeout=30).startswith("CONNECTION_ID:")
        ws.send(json.dumps({"type": "transcribe-please"}))
        assert recv_json(ws)["code"] == "UNKNOWN_MESSAGE_TYPE"
        ws.send(audio_message(b"not audio at all", "a1"))
        replies = [recv_json(ws), recv_json(ws), recv_json(ws)]
        assert [m["type"] for m in replies] == ["state", "error", "state"], replies
        assert replies[1]["code"] == "AUDIO_DECODE_ERROR"
        ws.send(json.dumps({"type": "ping"}))  # its pong goes out after the errors' count
        assert recv_json(ws)["state"] == "pong"
        during = scrape(server)
    assert moved(before, during, "whisperwire_sessions_open", protocol="json") == 1
    assert moved(before, during, "whisperwire_sessions_open", protocol="text") == 1
    assert moved(before, during, "whisperwire_sessions_total", protocol="text") == 1
    assert moved(before, during, "whisperwire_errors_total", code="UNKNOWN_MESSAGE_TYPE") == 1
    assert moved(before, during, "whisperwire_errors_total", code="AUDIO_DECODE_ERROR") == 1
    assert moved(before, during, "whisperwire_clip_requests_total") == 1


def test_the_api_key_protects_metrics_but_not_health_or_the_page(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--api-key", "K")
    try:
        refused = get_metrics(server)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer KEY" in refused.text
        assert get_metrics(server, Authorization="Bearer not-K").status_code == 401
        samples = scrape(server, Authorization="Bearer K")
        assert value(samples, "whisperwire_sessions_total", protocol="json") == 0
        health = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=30)
        assert health.status_code == 200
        for path in ("/health", "/"):  # HEAD too, as load balancers' checks send it
            head = httpx.head(f"http://127.0.0.1:{server.port}{path}", timeout=30)
            assert head.status_code == 200 and head.content == b"", path
    finally:
        server.stop()


def test_metrics_public_serves_them_without_the_key(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--api-key", "K", "--metrics-public")
    try:
        scrape(server)
    finally:
        server.stop()


def test_forwarding_reports_deliveries_and_failures(tmp_path: Path) -> None:
    """The first session's batch is refused (400: a permanent failure), the second's taken."""
    with FakeBackend() as backend:
        backend.script(json_reply({"error": "no"}, 400))
        server = start_server(
            tmp_path, "-f", backend.url("/hook"), "-nm", "100",
            "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
        try:
            before = scrape(server)
            replies: list[dict[str, Any]] = []
            for _ in range(2):
                result = stream(server.url, jfk())
                replies += [m for m in result.messages if m["type"] == "forward"]
            after = scrape(server)
        finally:
            server.stop()
    assert [r["status"] for r in replies] == [400, 200]
    assert moved(before, after, "whisperwire_forward_batches_failed_total") == 1
    assert moved(before, after, "whisperwire_forward_batches_sent_total") == 1
    assert value(after, "whisperwire_forward_outbox_depth") == 0  # nothing left to deliver
