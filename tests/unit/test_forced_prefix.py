"""Forced prefix (`PolicyConfig.forced_prefix`): each window is decoded after the committed
words it starts with, and only the words after them are new. Scripted transcriber, no model."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
from scripted import FakeWhisper, script, vad_probs

from unit.test_policy import feed_between, finals_text, run
from whisperwire.policy import DecodeRequest, Final, Policy, PolicyConfig
from whisperwire.words import Hypothesis, Word, norm

WORDS = [
    *("then", "moses", "was", "afraid", "and", "he", "said", "surely"),
    *("this", "thing", "is", "known", "to", "all", "of", "them"),
]


class Continuing(FakeWhisper):
    """Honours the prefix as the real decoder does: says its words first (re-timed by one
    alignment), then the scripted words after them, each placed `shift` seconds earlier
    than the words the free decode gives (one alignment of the whole window moves them)."""

    def __init__(self, *args: object, shift: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.shift = shift

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        free = super().__call__(request)
        if not request.prefix:
            return free
        forced = request.prefix.split()
        said = [norm(w.text) for w in free.words[: len(forced)]]
        assert said == [norm(w) for w in forced], (said, forced)  # the window starts with it
        rest = [
            Word(w.text, w.start - self.shift, w.end - self.shift, w.probability)
            for w in free.words[len(forced) :]
        ]
        return Hypothesis(free.words[: len(forced)] + rest, "en", forced=len(forced))


def test_each_window_is_decoded_after_the_committed_words_it_starts_with() -> None:
    policy = Policy(PolicyConfig(forced_prefix=True))
    fake = Continuing(script(WORDS, 1.0), unstable_tail=False)
    events = run(policy, fake, 10.0, [(1.0, 7.4)])
    assert finals_text(events).split() == WORDS
    prefixes = [r.prefix for r in fake.requests if r.prefix]
    assert len(prefixes) >= 3  # the fake checked each against the window's first words
    assert all(len(a.split()) <= len(b.split()) for a, b in pairwise(prefixes))
    assert prefixes[-1].split() == WORDS[: len(prefixes[-1].split())]


def test_the_words_after_the_prefix_are_new_where_the_times_disagree() -> None:
    """One alignment of prefix and continuation can place the first new word a little
    before the end the earlier decode gave the last committed word; placed by times, that
    word would be taken for a committed one and lost."""
    words = WORDS[:10]
    fake = Continuing(script(words, 1.0), unstable_tail=False, shift=0.3)
    events = run(Policy(PolicyConfig(forced_prefix=True)), fake, 8.0, [(1.0, 5.2)])
    assert finals_text(events).split() == words


def test_a_prefix_that_a_newer_commit_outdated_is_not_trusted() -> None:
    """Two partial decodes in flight with one prefix: the first commits words; the second
    says them again after the same prefix, so its own words are placed by the seam."""
    policy = Policy(PolicyConfig(forced_prefix=True))
    policy.max_in_flight = 2
    fake = Continuing(script(WORDS, 1.0), unstable_tail=False)
    probs = vad_probs(12.0, [(1.0, 7.4)])
    feed_between(policy, probs, 0.0, 4.0)
    events = []
    while (request := policy.next_request()) is not None:  # the first words are committed
        policy.apply(request, fake(request))
        events += policy.events()
    feed_between(policy, probs, 4.0, 4.6)
    first = policy.next_request()
    feed_between(policy, probs, 4.6, 5.2)
    second = policy.next_request()
    assert first is not None and second is not None
    assert first.prefix and first.prefix == second.prefix
    policy.apply(first, fake(first))
    policy.apply(second, fake(second))
    feed_between(policy, probs, 5.2)
    policy.finish()
    while (request := policy.next_request()) is not None:
        policy.apply(request, fake(request))
    events += policy.events()
    assert finals_text(events).split() == WORDS


def test_no_prefix_while_the_language_is_unknown_nor_when_off() -> None:
    unknown = Policy(PolicyConfig(forced_prefix=True), language=None)
    fake = Continuing(script(WORDS, 1.0), unstable_tail=False)
    run(unknown, fake, 10.0, [(1.0, 7.4)])
    undecided = [r for r in fake.requests if r.language is None]
    assert undecided and not any(r.prefix for r in undecided)

    fake = Continuing(script(WORDS, 1.0), unstable_tail=False)
    events = run(Policy(PolicyConfig(forced_prefix=False)), fake, 10.0, [(1.0, 7.4)])
    assert not any(r.prefix for r in fake.requests)
    assert [e for e in events if isinstance(e, Final)]
    assert np.isclose(events[-1].duration, 10.0, atol=0.05)


class Unsure(Continuing):
    """Continuing, with one word said at a probability that one-pass commits but that is
    too low to force."""

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        said = super().__call__(request)
        words = [replace(w, probability=0.4) if norm(w.text) == "afraid" else w for w in said.words]
        return replace(said, words=words)


def test_the_prefix_stops_before_an_unsure_committed_word() -> None:
    """A committed word Whisper was unsure of is not forced, nor is anything after it: those
    words are decoded freely again, and cut at the seam, so none is lost or said twice."""
    fake = Unsure(script(WORDS, 1.0), unstable_tail=False)
    config = PolicyConfig(forced_prefix=True, forced_min_probability=0.5)
    events = run(Policy(config), fake, 10.0, [(1.0, 7.4)])
    assert finals_text(events).split() == WORDS
    prefixes = [r.prefix.split() for r in fake.requests if r.prefix]
    assert prefixes and all("afraid" not in p for p in prefixes)
    assert max(map(len, prefixes)) == WORDS.index("afraid")  # the sure words before it are

    fake = Unsure(script(WORDS, 1.0), unstable_tail=False)
    run(Policy(PolicyConfig(forced_prefix=True)), fake, 10.0, [(1.0, 7.4)])
    assert any("afraid" in r.prefix.split() for r in fake.requests)  # 0: every word is forced
