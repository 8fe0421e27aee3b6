"""Cadence and admission under a fake clock: no threads, no model."""

from __future__ import annotations

import pytest

from whisperwire.load import LoadMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor(clock: Clock, **overrides: float) -> LoadMonitor:
    settings = {"workers": 1, "base_step_s": 0.5, "max_lag_s": 3.0, "prior_decode_s": 0.4}
    settings.update(overrides)
    return LoadMonitor(clock=clock, **settings)  # type: ignore[arg-type]


def test_the_step_stretches_with_the_streams_and_comes_back() -> None:
    clock = Clock()
    load = monitor(clock)
    for _ in range(5):
        load.record("partial", 0.4)
    steps = []
    for i in range(4):
        load.stream_opened(f"s{i}")
        steps.append(load.step())
    assert steps[0] == 0.5  # one stream: the policy's own step
    assert steps == sorted(steps) and steps[-1] == pytest.approx(4 * 0.4 / 0.85)
    for i in range(1, 4):
        load.stream_closed(f"s{i}")
    assert load.step() == 0.5


def test_every_stream_gets_the_same_share_of_the_workers() -> None:
    """n streams at the shared step use `target` of the workers, never more."""
    clock = Clock()
    for workers in (1, 2, 4):
        load = monitor(clock, workers=workers, max_lag_s=60.0)
        load.record("partial", 0.6)
        for n in range(1, 20):
            step = load.step(n)
            if n <= workers:  # a worker each, or more: the policy's step, or shorter
                assert step == 0.5 / load.parallel(n)
                assert n * load.parallel(n) <= workers  # never more decodes than workers
            else:
                assert load.parallel(n) == 1
                assert n * 0.6 / step <= workers * load.target + 1e-9


def test_idle_workers_run_a_lone_streams_decodes_side_by_side_until_another_comes() -> None:
    clock = Clock()
    load = monitor(clock, workers=2)
    load.record("partial", 0.5)
    load.stream_opened("first")
    assert (load.parallel(), load.step()) == (2, 0.25)  # two workers, one stream
    assert load.status()["parallel"] == 2
    load.stream_opened("second")
    assert (load.parallel(), load.step()) == (1, 0.5)
    load.stream_closed("second")
    load.clip_started()  # a clip takes the second worker as well
    assert (load.parallel(), load.step()) == (1, 0.5)
    load.clip_finished()
    assert load.parallel() == 2
    assert monitor(clock, workers=2, max_parallel=1).parallel(1) == 1  # turned off


def test_with_a_solo_decoder_a_lone_stream_decodes_one_at_a_time() -> None:
    """Its decodes run on all the cores: a second at once would only queue behind the first
    with older audio. Two streams get the workers as before."""
    clock = Clock()
    load = monitor(clock, workers=2, solo=True)
    load.stream_opened("first")
    assert (load.parallel(), load.step()) == (1, 0.5)
    load.stream_opened("second")
    assert (load.parallel(), load.step()) == (1, 0.5)
    load.stream_closed("first")
    load.stream_closed("second")
    load.clip_started()  # a clip alone: on the solo decoder too
    assert load.parallel(0) == 1
    four = monitor(clock, workers=4, solo=True)
    assert four.parallel(2) == 2  # the workers outnumber two streams: side by side


def test_a_stream_is_refused_when_it_would_push_the_others_past_the_lag() -> None:
    clock = Clock()
    load = monitor(clock, max_lag_s=3.0, decodes_per_commit=1)
    load.record("partial", 0.4)
    load.record("final", 0.6)
    # max step = 3.0 - 0.4 - 0.6 = 2.0 s; n * 0.4 / 0.85 <= 2.0 -> n <= 4.25
    admitted = 0
    while load.admit_stream():
        load.stream_opened(f"s{admitted}")
        admitted += 1
        assert admitted < 100
    assert admitted == 4 == load.capacity()
    assert load.refused == 1
    status = load.status()
    assert status["live_streams"] == 4 and status["headroom"] == 0
    assert status["step_s"] <= load.max_step_s
    load.stream_closed("s0")
    assert load.admit_stream()


def test_slower_decodes_lower_the_capacity() -> None:
    clock = Clock()
    load = monitor(clock, max_lag_s=3.0)
    load.record("partial", 0.4)
    load.record("final", 0.6)
    fast = load.capacity()
    for _ in range(30):
        load.record("partial", 0.8)
    assert 0 < load.capacity() < fast


def test_clips_take_their_turns_from_the_streams() -> None:
    """A clip decodes one window per round of the scheduler: it lowers what the streams get,
    never to nothing."""
    clock = Clock()
    load = monitor(clock, workers=1, max_lag_s=4.0)
    load.record("partial", 0.5)
    load.record("final", 0.5)
    without, step_without = load.capacity(), load.step(2)
    load.clip_started()
    with_one = load.capacity()
    assert 1 <= with_one < without and load.step(2) > step_without
    for _ in range(20):
        load.clip_started()
    assert load.capacity() == 1  # the first stream still comes in
    load.stream_opened("first")
    assert not load.admit_stream()
    for _ in range(21):
        load.clip_finished()
    assert load.capacity() == without and load.admit_stream()


def test_a_silent_connection_stops_counting_after_idle_s() -> None:
    clock = Clock()
    load = monitor(clock, idle_s=10.0)
    load.stream_opened("quiet")
    load.stream_opened("talker")
    assert load.live_streams == 2
    clock.now += 6
    load.stream_audio("talker")
    clock.now += 6
    assert load.live_streams == 1
    load.stream_audio("quiet")  # it speaks again: it counts again
    assert load.live_streams == 2


def test_a_stream_still_decoding_audio_sent_earlier_counts_as_live() -> None:
    """A client that sent 30 s at once and then nothing keeps the workers busy until its
    audio is decoded: it counts, and a replica carrying it has no room for another."""
    clock = Clock()
    load = monitor(clock, idle_s=10.0, max_lag_s=0.6)
    load.stream_opened("backlog")
    load.stream_audio("backlog")
    for _ in range(14):  # no audio for 14 s, decodes all the while
        clock.now += 1
        load.stream_decoded("backlog")
    assert load.live_streams == 1
    assert not load.admit_stream()
    clock.now += 11  # caught up: nothing to decode, nothing sent
    assert load.live_streams == 0
    load.stream_closed("backlog")
    load.stream_decoded("backlog")  # a decode finishing after its session closed
    assert load.live_streams == 0


def test_the_first_stream_is_admitted_however_slow_the_machine() -> None:
    """One stream is the best the machine can do: refusing it would help nobody."""
    clock = Clock()
    load = monitor(clock, max_lag_s=0.6)
    assert load.capacity() == 1
    assert load.admit_stream()
    load.stream_opened("only")
    assert not load.admit_stream()
    assert load.retry_after_s() >= 1.0


def test_a_stream_that_finds_a_worker_free_is_admitted_however_slow_the_decodes() -> None:
    """A stream on a worker of its own slows no admitted stream: a final decode slower than
    the lag bound allows (another process on the machine, or a long window) does not turn a
    two-worker server into a one-stream server."""
    clock = Clock()
    load = monitor(clock, workers=2, max_lag_s=2.0, decodes_per_commit=1)
    load.record("partial", 0.6)
    load.record("final", 1.2)  # max step = 2.0 - 0.6 - 1.2 = 0.2 s, under the base step
    assert load.max_step_s < load.base_step_s
    assert load.capacity() == 2
    for name in ("first", "second"):
        assert load.admit_stream()
        load.stream_opened(name)
    assert not load.admit_stream()  # a third would share a worker
    load.stream_closed("second")
    load.clip_started()  # a clip takes the second worker
    assert load.capacity() == 1 and not load.admit_stream()
    load.clip_finished()
    assert load.admit_stream()


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("clips", [0, 1, 3])
@pytest.mark.parametrize("partial_s", [0.2, 0.5, 1.5])
def test_capacity_is_what_admission_lets_in(workers: int, clips: int, partial_s: float) -> None:
    clock = Clock()
    load = monitor(clock, workers=workers, max_lag_s=3.5)
    load.record("partial", partial_s)
    load.record("final", 0.8)
    for _ in range(clips):
        load.clip_started()
    admitted = 0
    while load.admit_stream():
        load.stream_opened(f"s{admitted}")
        admitted += 1
        assert admitted < 1000
    assert admitted == load.capacity() >= 1


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("partial_s", [0.2, 0.5, 1.5])
def test_the_room_reported_is_the_streams_admission_then_lets_in(
    workers: int, partial_s: float
) -> None:
    clock = Clock()
    load = monitor(clock, workers=workers, max_lag_s=3.5)
    load.record("partial", partial_s)
    load.record("final", 0.8)
    load.stream_opened("first")
    room = load.room(limit=1000)
    admitted = 0
    while load.admit_stream():
        load.stream_opened(f"s{admitted}")
        admitted += 1
        assert admitted < 1000
    assert room == admitted and load.room(limit=1000) == 0
    assert monitor(clock, workers=workers).room(limit=0) == 0  # --max-sessions reached


def test_agreement_waits_two_decodes_so_it_carries_fewer_streams() -> None:
    """LocalAgreement-2 commits a word after two decodes, one-pass after one (once the word
    is `guard` old): the same lag bound leaves agreement a step half as long."""
    clock = Clock()
    agreement = monitor(clock, max_lag_s=4.0, decodes_per_commit=2)
    one_pass = monitor(clock, max_lag_s=4.0, decodes_per_commit=1, commit_guard_s=0.5)
    for load in (agreement, one_pass):
        load.record("partial", 0.3)
        load.record("final", 0.5)
    assert agreement.max_step_s == pytest.approx((4.0 - 0.8) / 2)
    assert one_pass.max_step_s == pytest.approx(4.0 - 0.8 - 0.5)
    assert agreement.capacity() < one_pass.capacity()


def test_a_session_sending_clips_counts_as_its_clips_not_also_as_a_stream() -> None:
    """A connection that transcribes a clip is a clip for the load; a live stream that comes
    beside it is the first live stream, and it comes in however slow the machine."""
    clock = Clock()
    load = monitor(clock, workers=2, max_lag_s=2.0)
    load.record("partial", 1.0)
    load.record("final", 1.5)
    load.stream_opened("clips")
    load.clip_started("clips")
    assert load.live_streams == 0 and load.status()["clips"] == 1
    assert load.admit_stream()
    load.stream_opened("live")
    assert load.live_streams == 1
    load.clip_finished()
    load.stream_audio("clips")  # it streams audio now: a live stream again
    assert load.live_streams == 2
    load.stream_closed("clips")
    load.clip_started("clips")  # a late clip of a closed session counts as a clip only
    assert load.live_streams == 1


def test_until_decodes_are_measured_they_are_assumed_slower_than_the_warm_up() -> None:
    """The prior is the warm-up's decode of a second of silence; a window of speech costs up
    to twice that (measured 1.5-1.8x on 2 cores). Taken at face value, it let a burst of
    streams into a fresh server that the measured times then showed it could not carry."""
    clock = Clock()
    # 2 cores, tiny.en: prior 0.39 s; measured under load: partial 0.57 s, final 0.69 s
    load = monitor(
        clock,
        workers=2,
        max_lag_s=2.78,
        prior_decode_s=0.39,
        decodes_per_commit=1,
        commit_guard_s=0.8,
    )
    # a worker each; the prior at face value: (2.78 - 0.8 - 2 * 0.39) * 1.7 / 0.39 = 5
    assert load.capacity() == 2
    admitted = 0
    while load.admit_stream():
        load.stream_opened(f"s{admitted}")
        admitted += 1
    assert admitted == 2
    load.record("partial", 0.57)
    load.record("final", 0.69)
    assert load.capacity() == 2  # what the measured times carry too
    fast = monitor(clock, workers=2, max_lag_s=4.0, prior_decode_s=0.2, decodes_per_commit=1)
    assert fast.capacity() == int((4.0 - 0.4 - 0.4) * 2 * 0.85 / 0.4) > 2  # room stays room
