"""The server's metrics, without a server: what a scrape of /metrics shows after the calls
the session, the scheduler and the server make."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from whisperwire.metrics import FinalLag, Metrics, merge_expositions
from whisperwire.protocol import events as ev


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, parsed as Prometheus parses it: (name, labels) -> value."""
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples[(name, frozenset(labels.items()))]


def final(segment_id: int, end: float) -> ev.Final:
    return ev.Final(segment_id=segment_id, text="x", start=0.0, end=end, language="en", words=())


def test_every_series_is_there_from_the_start_at_zero() -> None:
    samples = scrape(Metrics())
    for protocol in ("json", "text"):
        assert value(samples, "whisperwire_sessions_open", protocol=protocol) == 0
        assert value(samples, "whisperwire_sessions_total", protocol=protocol) == 0
    for kind in ("partial", "commit", "final", "cap", "clip"):
        assert value(samples, "whisperwire_decode_jobs_total", kind=kind) == 0
        assert value(samples, "whisperwire_decode_duration_seconds_count", kind=kind) == 0
    assert value(samples, "whisperwire_errors_total", code="UNKNOWN_MESSAGE_TYPE") == 0
    assert value(samples, "whisperwire_audio_received_seconds_total") == 0
    assert value(samples, "whisperwire_final_lag_seconds_count") == 0
    assert value(samples, "whisperwire_clip_requests_total") == 0
    assert value(samples, "whisperwire_scheduler_queue_depth") == 0
    assert value(samples, "whisperwire_realtime_factor") == 0
    assert not any(name.startswith("whisperwire_forward") for name, _ in samples)


def test_two_servers_in_one_process_have_registries_of_their_own() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second
    first.clip_requested()
    assert value(scrape(first), "whisperwire_clip_requests_total") == 1
    assert value(scrape(second), "whisperwire_clip_requests_total") == 0


def test_a_session_counts_while_open_and_once_in_total() -> None:
    metrics = Metrics()
    session = metrics.session()
    session.opened("text")
    session.opened("text")  # counted once
    samples = scrape(metrics)
    assert value(samples, "whisperwire_sessions_open", protocol="text") == 1
    assert value(samples, "whisperwire_sessions_total", protocol="text") == 1
    assert value(samples, "whisperwire_sessions_open", protocol="json") == 0
    session.closed()
    session.closed()  # closed once
    samples = scrape(metrics)
    assert value(samples, "whisperwire_sessions_open", protocol="text") == 0
    assert value(samples, "whisperwire_sessions_total", protocol="text") == 1


def test_audio_finals_and_errors_of_a_session() -> None:
    metrics = Metrics()
    session = metrics.session()
    session.opened("json")
    for i in range(30):  # 3 s in 100 ms frames, frame i arriving at 10 + i/10
        session.audio(0.1, (i + 1) / 10, 10.0 + i / 10, needed_from_s=0.0)
    session.final_made(0, 1.25, needed_from_s=1.3)  # its last word ends in frame 12 (to 1.3 s)
    session.final_made(1, 2.95, needed_from_s=3.0)  # in the last frame, arrived at 12.9
    session.sent(final(0, 1.25), at=12.0)
    session.sent(final(1, 2.95), at=13.4)
    session.sent(ev.Error(code="UNKNOWN_MESSAGE_TYPE", message="?"), at=13.5)
    session.sent(ev.Partial(segment_id=2, text="y", stable="", start=3, end=3), at=13.6)
    samples = scrape(metrics)
    assert value(samples, "whisperwire_audio_received_seconds_total") == pytest.approx(3.0)
    assert value(samples, "whisperwire_final_lag_seconds_count") == 2
    assert value(samples, "whisperwire_final_lag_seconds_sum") == pytest.approx(0.8 + 0.5)
    assert value(samples, "whisperwire_final_lag_seconds_bucket", le="0.5") == 1
    assert value(samples, "whisperwire_final_lag_seconds_bucket", le="1.0") == 2
    assert value(samples, "whisperwire_errors_total", code="UNKNOWN_MESSAGE_TYPE") == 1


def test_decode_jobs_and_the_real_time_factor() -> None:
    metrics = Metrics()
    metrics.session().audio(4.0, 4.0, 0.0, 0.0)
    for kind, seconds in [("partial", 0.25), ("partial", 0.75), ("final", 1.0), ("clip", 5.0)]:
        metrics.decode_done(kind, seconds)
    samples = scrape(metrics)
    assert value(samples, "whisperwire_decode_jobs_total", kind="partial") == 2
    assert value(samples, "whisperwire_decode_duration_seconds_count", kind="partial") == 2
    assert value(samples, "whisperwire_decode_duration_seconds_sum", kind="partial") == 1.0
    assert value(samples, "whisperwire_decode_duration_seconds_bucket", kind="partial", le="0.5")
    assert value(samples, "whisperwire_decode_jobs_total", kind="clip") == 1
    # live-stream decodes per second of live audio: clips are not live audio
    assert value(samples, "whisperwire_realtime_factor") == pytest.approx(2.0 / 4.0)


def test_the_queue_depth_is_read_at_each_scrape() -> None:
    metrics = Metrics()
    depth = [3]
    metrics.watch_queue(lambda: depth[0])
    assert value(scrape(metrics), "whisperwire_scheduler_queue_depth") == 3
    depth[0] = 0
    assert value(scrape(metrics), "whisperwire_scheduler_queue_depth") == 0


def test_the_forwarders_metrics_join_the_registry_once_forwarding_is_on() -> None:
    metrics = Metrics()
    forward = metrics.forward()
    assert metrics.forward() is forward
    forward.batch_sent()
    forward.batch_failed()
    forward.set_outbox_depth(4)
    samples = scrape(metrics)
    assert value(samples, "whisperwire_forward_batches_sent_total") == 1
    assert value(samples, "whisperwire_forward_batches_failed_total") == 1
    assert value(samples, "whisperwire_forward_outbox_depth") == 4


def test_final_lag_counts_from_the_frame_that_ended_the_last_word() -> None:
    lag = FinalLag()
    lag.audio(0.5, at=100.0, needed_from_s=0.0)
    lag.audio(1.0, at=100.4, needed_from_s=0.0)
    lag.final_made(0, 0.5, needed_from_s=0.0)  # a word ending on a frame's end: that frame
    lag.final_made(1, 0.7, needed_from_s=0.0)
    lag.final_made(2, 1.2, needed_from_s=0.0)  # timed past the audio: the last frame
    lag.final_made(3, 1.0, needed_from_s=0.0)
    assert lag.final_sent(0, at=101.0) == pytest.approx(1.0)
    assert lag.final_sent(1, at=101.0) == pytest.approx(0.6)
    # final 2 was never sent (its client went): the next one sent is still matched
    assert lag.final_sent(3, at=100.3) == 0.0  # a clock that went back counts as no lag
    assert lag.final_sent(9, at=102.0) is None  # not made here


def test_final_lag_forgets_audio_no_final_can_end_in() -> None:
    """An hour of silence in 20 ms frames: the frames kept stay few."""
    lag = FinalLag()
    for i in range(180_000):
        end = (i + 1) * 0.02
        lag.audio(end, at=end, needed_from_s=max(0.0, end - 1.0))
    assert len(lag._frames) <= 51  # the last second's frames
    lag.final_made(0, 3599.99, needed_from_s=3599.0)
    assert lag.final_sent(0, at=3601.0) == pytest.approx(1.0)


def test_api_requests_are_counted_by_route_and_status() -> None:
    metrics = Metrics()
    metrics.api_request("transcriptions", 200)
    metrics.api_request("transcriptions", 200)
    metrics.api_request("transcriptions", 400)
    metrics.api_request("models", 200)
    samples = scrape(metrics)
    total = "whisperwire_api_requests_total"
    assert value(samples, total, route="transcriptions", status="200") == 2
    assert value(samples, total, route="transcriptions", status="400") == 1
    assert value(samples, total, route="models", status="200") == 1


def test_the_pages_of_several_replicas_merge_into_one_labelled_by_replica() -> None:
    """What /metrics answers on Ray: every replica's series, told apart by `replica`, with one
    HELP and TYPE per family, parsed back as Prometheus parses it."""
    a, b = Metrics(), Metrics()
    a.error_sent("OVERLOADED")
    for _ in range(2):
        b.error_sent("OVERLOADED")
    b.decode_done("partial", 0.3)
    text = merge_expositions({"r1": a.exposition(), "r2": b.exposition()}).decode()
    assert text.count("# TYPE whisperwire_errors_total counter") == 1
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    errors = "whisperwire_errors_total"
    assert samples[(errors, frozenset({("code", "OVERLOADED"), ("replica", "r1")}))] == 1
    assert samples[(errors, frozenset({("code", "OVERLOADED"), ("replica", "r2")}))] == 2
    jobs = "whisperwire_decode_duration_seconds_count"
    assert samples[(jobs, frozenset({("kind", "partial"), ("replica", "r2")}))] == 1
    assert samples[(jobs, frozenset({("kind", "partial"), ("replica", "r1")}))] == 0
    one = {key for key in samples if ("replica", "r1") in key[1]}
    assert len(one) == len(scrape(a))  # nothing of a replica left out, nothing added
    assert merge_expositions({}) == b""
