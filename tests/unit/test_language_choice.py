"""Language detection in the streaming policy (`language=auto`), with a scripted Whisper whose
detection is wrong on short windows, as real Whisper's is on a region's first second."""

from __future__ import annotations

import numpy as np
import pytest
from scripted import FakeWhisper, Spoken, script, vad_probs

from whisperwire.endpointing import VAD_CHUNK
from whisperwire.language_choice import LanguageChoice
from whisperwire.policy import SAMPLE_RATE, DecodeRequest, Final, Partial, Policy
from whisperwire.words import Hypothesis, Word


class Detecting(FakeWhisper):
    """Speaks `language`, but detects it only on a window of `needs_s` or more (probability
    0.97); a shorter one is taken for English (probability 0.5) and heard as English words.
    A decode made in a given language hears it in that language."""

    def __init__(self, spoken: list[Spoken], language: str, needs_s: float = 3.0) -> None:
        super().__init__(spoken, unstable_tail=False)
        self.language, self.needs_s = language, needs_s

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        words = super().__call__(request).words
        seconds = len(request.audio) / SAMPLE_RATE
        heard = request.language or (self.language if seconds >= self.needs_s else "en")
        probability = 1.0 if request.language else 0.97 if heard == self.language else 0.5
        if heard != self.language:
            words = [Word(" the", w.start, w.end, w.probability, w.segment) for w in words]
        return Hypothesis(words, heard, probability)


def run(
    policy: Policy,
    fake: FakeWhisper,
    duration: float,
    speech: list[tuple[float, float]],
    switch: tuple[float, str] | None = None,
) -> list:
    """Real-time feeding in 0.1 s frames, a decode whenever the policy asks, then finish;
    `switch`: (time, language) of a `config` message."""
    probs = vad_probs(duration, speech)
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    per_frame = int(0.1 * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK
    events = []

    def drain() -> None:
        events.extend(policy.events())
        while (request := policy.next_request()) is not None:
            policy.apply(request, fake(request))
            events.extend(policy.events())

    for start in range(0, len(samples), per_frame):
        if switch is not None and start >= switch[0] * SAMPLE_RATE:
            policy.set_options(switch[1], "transcribe")
            switch = None
        chunk = samples[start : start + per_frame]
        policy.feed(chunk, probs[start // VAD_CHUNK : (start + len(chunk)) // VAD_CHUNK])
        drain()
    policy.finish()
    drain()
    return events


GERMAN = [
    "für",
    "die",
    "besten",
    "aussichten",
    "auf",
    "hongkong",
    "sollten",
    "sie",
    "die",
    "insel",
    "verlassen",
]


def finals(events: list) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def test_nothing_is_committed_before_the_language_is_fixed_on_enough_audio() -> None:
    policy = Policy(language=None)
    fake = Detecting(script(GERMAN, 0.5), "de")
    events = run(policy, fake, 8.0, [(0.5, 5.0)])
    assert " ".join(f.text for f in finals(events)).split() == GERMAN
    assert {f.language for f in finals(events)} == {"de"}
    detecting = [r for r in fake.requests if r.language is None]
    assert detecting and all(len(r.audio) / SAMPLE_RATE < 3.0 + 0.6 for r in detecting)
    assert all(r.language == "de" for r in fake.requests[len(detecting) :])
    # the words that waited are committed by a thorough decode in the language fixed
    assert fake.requests[len(detecting)].kind == "commit"
    # the provisional words were shown as partials, never as stable ones
    early = [e for e in events if isinstance(e, Partial) and "the" in e.text.split()]
    assert early and all(e.stable == "" for e in early)


def test_a_short_region_takes_the_sessions_language_and_is_decoded_again() -> None:
    second = script(["ja", "genau"], 9.0)
    policy = Policy(language=None)
    fake = Detecting(script(GERMAN, 0.5) + second, "de")
    events = run(policy, fake, 12.0, [(0.5, 5.0), (9.0, 9.8)])
    last = finals(events)[-1]
    assert last.text == "ja genau" and last.language == "de"
    assert [r.language for r in fake.requests if r.kind == "final"][-2:] == [None, "de"]


def test_without_a_session_language_a_short_region_keeps_its_detection() -> None:
    policy = Policy(language=None)
    fake = Detecting(script(["ja", "genau"], 0.5), "de")
    events = run(policy, fake, 3.0, [(0.5, 1.3)])
    assert [(f.text, f.language) for f in finals(events)] == [("the the", "en")]


def test_a_forced_language_is_never_detected() -> None:
    policy = Policy(language="de")
    fake = Detecting(script(GERMAN, 0.5), "de")
    events = run(policy, fake, 8.0, [(0.5, 5.0)])
    assert {r.language for r in fake.requests} == {"de"}
    assert " ".join(f.text for f in finals(events)).split() == GERMAN


def test_switching_to_auto_forgets_the_language_fixed_before() -> None:
    policy = Policy(language=None)
    policy._choice.region = policy._choice.session = "de"
    policy.set_options("fr", "transcribe")
    policy.set_options(None, "transcribe")
    assert policy._choice.region is None and policy._choice.session is None


@pytest.mark.parametrize(
    ("probability", "seconds", "fixed"),
    [(0.5, 1.0, None), (0.95, 1.0, None), (0.95, 2.0, "de"), (0.5, 5.9, None), (0.5, 6.0, "de")],
)
def test_a_detection_fixes_the_language_on_enough_audio_or_confidence(
    probability: float, seconds: float, fixed: str | None
) -> None:
    choice = LanguageChoice(min_s=2.0, probability=0.9, enough_s=6.0)
    committed = choice.observe(None, Hypothesis([], "de", probability), seconds, last=False)
    assert (choice.region, committed) == (fixed, fixed is not None)


def test_a_detecting_decode_that_disagrees_with_the_fixed_language_is_not_committed() -> None:
    choice = LanguageChoice(region="de", session="de")
    assert not choice.observe(None, Hypothesis([], "en", 0.6), 3.0, last=False)
    assert choice.observe(None, Hypothesis([], "de", 0.99), 3.0, last=False)
    assert choice.observe("de", Hypothesis([], "de"), 3.0, last=True)
    assert not choice.observe("fr", Hypothesis([], "fr"), 3.0, last=True)


@pytest.mark.parametrize("switch", [None, "fr"])
def test_a_new_language_does_not_take_the_audio_before_it_as_context(switch: str | None) -> None:
    policy = Policy(language="de")
    spoken = script(["eins", "zwei", "drei"], 0.5) + script(["un", "deux", "trois"], 3.0)
    fake = FakeWhisper(spoken, unstable_tail=False)
    events = run(policy, fake, 6.0, [(0.5, 1.7), (3.0, 4.2)], (2.5, switch or "de"))
    assert " ".join(f.text for f in finals(events)) == "eins zwei drei un deux trois"
    second = [r for r in fake.requests if r.offset + len(r.audio) / SAMPLE_RATE > 3.0]
    if switch is None:  # the region 1.3 s before stays in the window, as context
        assert min(r.offset for r in second) < 1.0
    else:
        assert min(r.offset for r in second) > 2.0 and {r.language for r in second} == {"fr"}
