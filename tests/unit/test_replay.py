"""`whisperwire replay`'s virtual clock, driven by a scripted fake transcriber: no model."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import pytest
from scripted import FakeWhisper, script, vad_probs

from whisperwire.bench.replay import DecodeCost, Jittered, _jobs, _medians, _seeds, _variant, replay
from whisperwire.endpointing import VAD_CHUNK
from whisperwire.policy import Policy
from whisperwire.policy_events import DecodeRequest

WORDS = [
    "so",
    "my",
    "fellow",
    "americans",
    "ask",
    "not",
    "what",
    "your",
    "country",
    "can",
    "do",
    "for",
    "you",
]


def _replay(
    cost_s: float,
    fake: FakeWhisper,
    asked: list[tuple[float, float]] | None = None,
    jitter: Callable[[Callable[[DecodeRequest], float]], Callable[[DecodeRequest], float]]
    | None = None,
):
    """Three seconds of silence, the scripted words from 0.5 s, silence after them; each
    decode costs `cost_s` (or what `jitter` makes of that cost model)."""
    duration = 0.5 + 0.4 * len(WORDS) + 2.0
    probs = vad_probs(duration, [(0.5, 0.5 + 0.4 * len(WORDS))])
    audio = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)

    def cost(request: DecodeRequest) -> float:
        if asked is not None:
            asked.append((request.end, cost_s))
        return cost_s

    return replay(Policy(), audio, probs, fake, cost if jitter is None else jitter(cost))


def test_a_replay_gives_every_spoken_word_once_and_never_before_it_was_spoken() -> None:
    spoken = script(WORDS, 0.5)
    fake = FakeWhisper(spoken, unstable_tail=False)
    out = _replay(0.4, fake)
    assert out.text.lower().replace(".", "").split() == WORDS
    assert out.decodes == fake.calls
    times = [t for t, _ in out.messages]
    assert times == sorted(times)
    finals = [(t, m["text"]) for t, m in out.messages if m["type"] == "final"]
    said = {s.text.strip(): s.end for s in spoken}
    for at, text in finals:
        last = text.lower().replace(".", "").split()[-1]
        assert at >= said[last], (at, text)


def test_an_answer_arrives_when_its_cost_says_the_decode_is_done() -> None:
    asked: list[tuple[float, float]] = []
    out = _replay(1.5, FakeWhisper(script(WORDS, 0.5), unstable_tail=False), asked)
    first_request_end, cost = asked[0]
    first_message_at = out.messages[0][0]
    assert first_message_at >= first_request_end + cost - 1e-9


def test_slower_decodes_give_later_finals_and_fewer_decodes() -> None:
    quick = _replay(0.3, FakeWhisper(script(WORDS, 0.5), unstable_tail=False))
    slow = _replay(1.2, FakeWhisper(script(WORDS, 0.5), unstable_tail=False))
    assert slow.text == quick.text
    assert slow.decodes < quick.decodes

    def last_final(out):
        return max(t for t, m in out.messages if m["type"] == "final")

    assert last_final(slow) > last_final(quick)


def test_the_same_replay_gives_the_same_messages() -> None:
    one = _replay(0.7, FakeWhisper(script(WORDS, 0.5)))
    two = _replay(0.7, FakeWhisper(script(WORDS, 0.5)))
    assert one.messages == two.messages


def test_the_cost_model_charges_partials_and_thorough_decodes_by_window_length() -> None:
    cost = DecodeCost()

    def request(kind: str, seconds: float) -> DecodeRequest:
        audio = np.zeros(int(seconds * 16000), dtype=np.float32)
        return DecodeRequest(0, audio, 0.0, "", "en", "transcribe", kind)  # type: ignore[arg-type]

    assert cost(request("partial", 2)) < cost(request("partial", 10)) < cost(request("final", 10))
    assert cost(request("partial", 10), greedy_partials=False) == cost(request("final", 10))


def test_variants_are_given_as_serve_flags() -> None:
    v = _variant("ctx", ["--trim-context", "5", "--commit", "agreement", "-bs", "3"])
    assert v.policy.trim_context_s == 5.0 and v.policy.commit == "agreement"
    assert v.engine["beam_size"] == 3 and v.language == "auto"
    assert _variant("plain", ["--trim-context", "0"]).policy.trim_context_s == 0.0
    assert _variant("de", ["--language", "de"]).language == "de"
    # the engine flags reach the replayed engine: the encoder's padding too
    assert _variant("short", ["--encoder-pad", "10"]).engine["encoder_pad_s"] == 10.0
    assert v.engine["encoder_pad_s"] == 30.0
    # and whether a window's cut tail is decoded after the text before it
    assert _variant("cond", ["--window-conditioning"]).engine["window_conditioning"] is True
    assert v.engine["window_conditioning"] is False


def test_a_jittered_cost_varies_within_its_bound_and_repeats_with_its_seed() -> None:
    request = DecodeRequest(
        0, np.zeros(16000 * 10, np.float32), 0.0, "", "en", "transcribe", "partial"
    )
    base = DecodeCost()(request)

    def draws(seed: int) -> list[float]:
        cost = Jittered(DecodeCost(), 0.3, np.random.default_rng((seed, 0)))
        return [cost(request) for _ in range(200)]

    one = draws(1)
    assert all(0.7 * base - 1e-9 <= c <= 1.3 * base + 1e-9 for c in one)
    assert min(one) < 0.8 * base and max(one) > 1.2 * base  # it does vary, both ways
    assert draws(1) == one
    assert draws(2) != one


def test_replays_with_jittered_decode_times_differ_in_timing_and_repeat_by_seed() -> None:
    """A live run's decodes take more or less time from one to the next: a jittered replay
    moves when answers arrive, and the same seed moves them the same way."""

    def run(seed: int):
        fake = FakeWhisper(script(WORDS, 0.5), unstable_tail=False)
        return _replay(0.6, fake, jitter=lambda c: Jittered(c, 0.5, np.random.default_rng(seed)))

    one, again, other = run(1), run(1), run(2)
    assert one.messages == again.messages
    assert [t for t, _ in one.messages] != [t for t, _ in other.messages]
    assert one.text.lower().replace(".", "").split() == WORDS


def test_seeds_are_one_or_a_list_and_a_bad_one_is_named() -> None:
    assert _seeds("1") == (1,)
    assert _seeds("1,2,3") == (1, 2, 3)
    for bad, says in (("one", "not a seed"), ("1,x", "not a seed"), ("2,2", "given twice")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            _seeds(bad)
    assert _jobs("2") == 2
    for bad, says in (("two", "not a number of jobs"), ("0", "1 job or more")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            _jobs(bad)


def test_several_seeds_give_the_median_of_their_figures_and_keep_each_run() -> None:
    def figures(wer: float, p50: float, p95: float) -> dict:
        lags = {"p50": p50, "p95": p95, "n": 10}
        return {
            "wer": wer,
            "wer_offline": 0.1,
            "wer_ratio": round(wer / 0.1, 3),
            "latency": {"final": lags, "first_seen": lags},
            "decodes": 100,
            "flags": ["--trim", "12"],
        }

    runs = {1: figures(0.15, 1.8, 2.6), 2: figures(0.17, 1.7, 3.0), 3: figures(0.14, 2.0, 2.5)}
    got = _medians(runs)
    assert got["wer"] == 0.15 and got["wer_range"] == [0.14, 0.17]
    assert got["wer_ratio"] == 1.5 and got["wer_offline"] == 0.1
    assert got["latency"]["final"] == {"p50": 1.8, "p95": 2.6}
    assert got["flags"] == ["--trim", "12"]
    assert got["by_seed"] == {"1": runs[1], "2": runs[2], "3": runs[3]}
