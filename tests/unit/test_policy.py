"""The streaming policy, driven by a scripted fake transcriber: no model, no threads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scripted import FakeWhisper, Spoken, script, vad_probs

from whisperwire.endpointing import VAD_CHUNK
from whisperwire.policy import (
    SAMPLE_RATE,
    DecodeRequest,
    Ended,
    Final,
    Flushed,
    Partial,
    Policy,
    PolicyConfig,
    SpeechEnded,
)
from whisperwire.words import (
    Hypothesis,
    Word,
    heard_prefix,
    seam,
    surer_of,
    without_loop,
    without_merged_head,
    without_squeezed_tail,
)


def run(
    policy: Policy,
    fake: FakeWhisper,
    duration: float,
    speech: list[tuple[float, float]],
    frame_s: float = 0.1,
    realtime: bool = True,
    finish: bool = True,
) -> list:
    """Feed audio in frames (decoding between frames when `realtime`), then finish."""
    probs = vad_probs(duration, speech)
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    events = []
    per_frame = int(frame_s * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK
    for start in range(0, len(samples), per_frame):
        chunk = samples[start : start + per_frame]
        policy.feed(chunk, probs[start // VAD_CHUNK : (start + len(chunk)) // VAD_CHUNK])
        if realtime:
            events += drain(policy, fake)
    if finish:
        policy.finish()
    events += drain(policy, fake)
    return events


def drain(policy: Policy, fake: FakeWhisper) -> list:
    events = policy.events()
    while (request := policy.next_request()) is not None:
        policy.apply(request, fake(request))
        events += policy.events()
    return events + policy.events()


def feed_between(policy: Policy, probs: np.ndarray, start: float, end: float | None = None) -> None:
    """Feed the (silent) samples and the VAD probabilities of `probs` from `start` to `end`
    seconds (None: to the end), in whole VAD chunks."""
    first = int(start * SAMPLE_RATE) // VAD_CHUNK
    last = len(probs) if end is None else int(end * SAMPLE_RATE) // VAD_CHUNK
    policy.feed(np.zeros((last - first) * VAD_CHUNK, dtype=np.float32), probs[first:last])


def first_partial(policy: Policy, speech_end: float, fed_s: float) -> tuple[DecodeRequest, float]:
    """Feed the first `fed_s` seconds of speech from 0.5 s to `speech_end`: the partial decode
    the policy asks, and the window-relative end of the audio it decodes."""
    feed_between(policy, vad_probs(speech_end + 0.5, [(0.5, speech_end)]), 0.0, fed_s)
    request = policy.next_request()
    assert request is not None and request.kind == "partial"
    return request, len(request.audio) / SAMPLE_RATE


def finals_text(events: list) -> str:
    return " ".join(e.text for e in events if isinstance(e, Final))


def test_silence_costs_nothing_and_says_nothing() -> None:
    policy, fake = Policy(), FakeWhisper([])
    events = run(policy, fake, 30.0, [])
    assert fake.calls == 0
    assert events == [Ended(duration=pytest.approx(30.0, abs=0.05), segments=0)]


@pytest.mark.parametrize("commit", ["one-pass", "agreement"])
def test_utterance_becomes_finals_with_every_word_once(commit: str) -> None:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    policy = Policy(PolicyConfig(commit=commit))  # type: ignore[arg-type]
    fake = FakeWhisper(script(words, 1.0))
    events = run(policy, fake, 8.0, [(1.0, 4.6)])
    assert finals_text(events).split() == words
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.segment_id for f in finals] == list(range(len(finals)))
    assert all("zz" not in f.text for f in finals), "an unconfirmed word became final"
    assert any(isinstance(e, Partial) for e in events)
    assert isinstance(events[-1], Ended) and events[-1].segments == len(finals)


def test_partials_come_while_speaking_and_finals_before_the_pause_ends() -> None:
    words = [f"w{i}" for i in range(20)]
    policy, fake = Policy(), FakeWhisper(script(words, 0.5))
    events = run(policy, fake, 10.0, [(0.5, 8.5)], finish=False)
    partial_ends = [e.end for e in events if isinstance(e, Partial)]
    assert len(partial_ends) >= 8, "partials should keep coming while someone speaks"
    # LocalAgreement commits during speech: most words are final before the stream ends.
    assert len(finals_text(events).split()) >= 15


def test_partial_segment_id_is_the_next_final_and_stable_is_a_prefix() -> None:
    policy = Policy(PolicyConfig(max_hold_s=5.0))
    fake = FakeWhisper(script(["one", "two", "three", "four", "five", "six", "seven"], 0.5))
    events = run(policy, fake, 6.0, [(0.5, 3.3)])
    finals_so_far = 0
    for event in events:
        if isinstance(event, Partial):
            assert event.segment_id == finals_so_far
            assert event.text.startswith(event.stable)
        elif isinstance(event, Final):
            finals_so_far += 1
    assert any(isinstance(e, Partial) and e.stable for e in events)


def test_faster_than_real_time_decodes_each_region_once_as_final() -> None:
    first = script(["alpha", "beta", "gamma"], 1.0)
    second = script(["delta", "epsilon", "zeta", "eta"], 5.0)
    policy, fake = Policy(), FakeWhisper(first + second)
    events = run(policy, fake, 9.0, [(1.0, 2.2), (5.0, 6.6)], realtime=False)
    assert finals_text(events).split() == [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
    ]
    assert [r.kind for r in fake.requests] == ["final", "final"]


@pytest.mark.parametrize("realtime", [False, True])
def test_a_backlog_decodes_utterances_a_short_pause_apart_as_one_window(realtime: bool) -> None:
    """Sent faster than real time, two utterances 1 s apart are one decode (Whisper gets
    the context offline decoding has); at real-time pace each is its own region, ended by
    its pause."""
    first = script(["alpha", "beta", "gamma"], 1.0)
    second = script(["delta", "epsilon", "zeta", "eta"], 3.4)
    policy, fake = Policy(), FakeWhisper(first + second)
    events = run(policy, fake, 12.0, [(1.0, 2.2), (3.4, 5.0)], realtime=realtime)
    assert finals_text(events).split() == [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
    ]
    finals = [r for r in fake.requests if r.kind == "final"]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    if realtime:
        assert len(finals) == len(ended) == 2
    else:
        assert len(finals) == len(fake.requests) == len(ended) == 1
        assert (
            finals[0].offset < 1.0 and finals[0].offset + len(finals[0].audio) / SAMPLE_RATE > 5.0
        )


def test_a_region_whose_last_decode_is_under_way_is_not_bridged() -> None:
    """The next region arriving while a region's final decode runs (two decodes may be in
    flight) waits for its own: the final applies to the region it was asked for."""
    first = script(["alpha", "beta", "gamma"], 1.0)
    second = script(["delta", "epsilon"], 3.4)
    policy, fake = Policy(), FakeWhisper(first + second)
    policy.max_in_flight = 2
    probs = vad_probs(12.0, [(1.0, 2.2), (3.4, 4.4)])
    feed_between(policy, probs, 0.0, 3.0)
    final = policy.next_request()
    assert final is not None and final.kind == "final"
    feed_between(policy, probs, 3.0)  # the next region, long behind
    assert policy.next_request() is None
    policy.apply(final, fake(final))
    policy.finish()
    events = policy.events() + drain(policy, fake)
    assert finals_text(events).split() == ["alpha", "beta", "gamma", "delta", "epsilon"]


def test_a_backlog_is_not_bridged_across_a_flush() -> None:
    first = script(["alpha", "beta", "gamma"], 1.0)
    second = script(["delta", "epsilon"], 3.4)
    policy, fake = Policy(), FakeWhisper(first + second)
    probs = vad_probs(8.0, [(1.0, 2.2), (3.4, 4.4)])
    feed_between(policy, probs, 0.0, 2.9)
    policy.flush()
    feed_between(policy, probs, 2.9)
    policy.finish()
    events = drain(policy, fake)
    assert finals_text(events).split() == ["alpha", "beta", "gamma", "delta", "epsilon"]
    assert [r.kind for r in fake.requests] == ["final", "final"]
    assert events.index(Flushed()) < [i for i, e in enumerate(events) if isinstance(e, Final)][-1]


def test_long_speech_without_pause_still_yields_finals_within_the_window() -> None:
    words = [f"w{i}" for i in range(150)]  # 60 s of unbroken speech
    policy, fake = Policy(), FakeWhisper(script(words, 0.0))
    events = run(policy, fake, 61.0, [(0.0, 61.0)], realtime=False)
    assert finals_text(events).split() == words
    assert max(len(r.audio) for r in fake.requests) <= 30 * SAMPLE_RATE
    assert sum(isinstance(e, Final) for e in events) >= 3


def test_a_full_window_is_cut_in_the_pause_after_its_last_complete_segment() -> None:
    """Unbroken speech sent at once: each full window commits through Whisper's last complete
    segment, and the next starts halfway through the pause that follows it, so neither the
    word before nor the word after is clipped by an estimated word time."""
    spoken = [Spoken(f" w{i}", i * 0.5, i * 0.5 + 0.3) for i in range(120)]  # 0.2 s pauses
    policy, fake = Policy(), FakeWhisper(spoken)
    events = run(policy, fake, 61.0, [(0.0, 61.0)], realtime=False)
    assert finals_text(events).split() == [f"w{i}" for i in range(120)]
    first, second = fake.requests[:2]
    assert (first.kind, first.offset) == ("cap", 0.0)
    # segments are the scripted 10 s stretches: the last complete one ends with w39 at 19.8 s
    assert second.offset == pytest.approx(19.9, abs=1e-3)


def test_long_speech_in_real_time_keeps_the_window_short() -> None:
    words = [f"w{i}" for i in range(100)]
    policy, fake = Policy(), FakeWhisper(script(words, 0.0))
    events = run(policy, fake, 41.0, [(0.0, 41.0)])
    assert finals_text(events).split() == words
    assert max(len(r.audio) for r in fake.requests) <= 16 * SAMPLE_RATE + 2 * VAD_CHUNK


def test_pause_then_speech_keeps_context_but_never_repeats_words() -> None:
    first = script(["ask", "not"], 1.0)
    second = script(["what", "your", "country", "can", "do"], 3.0)
    policy = Policy(PolicyConfig(prompt_chars=200))
    fake = FakeWhisper(first + second, unstable_tail=False)
    events = run(policy, fake, 7.0, [(1.0, 1.8), (3.0, 5.0)])
    assert finals_text(events).split() == ["ask", "not", "what", "your", "country", "can", "do"]
    last = fake.requests[-1]
    assert last.offset < 1.0, "the earlier region should stay in the window as context"
    assert last.prompt == "", "text inside the window is not given again as prompt"


def test_prompt_carries_the_text_before_the_window_when_enabled() -> None:
    first = script(["first", "sentence", "here"], 1.0)
    second = script(["second", "one"], 8.0)
    for chars, expected in ((200, "first sentence here"), (8, "nce here"), (0, "")):
        policy, fake = Policy(PolicyConfig(prompt_chars=chars)), FakeWhisper(first + second)
        run(policy, fake, 10.0, [(1.0, 2.2), (8.0, 8.8)])
        assert fake.requests[-1].prompt == expected
    assert Policy().config.prompt_chars == 0, "no prompt by default"


def test_flush_finalises_now_and_reports_flushed_after_the_finals() -> None:
    words = ["hello", "there", "general"]
    policy, fake = Policy(), FakeWhisper(script(words, 0.5))
    events = run(policy, fake, 1.9, [(0.5, 1.9)], finish=False)
    policy.flush()
    events += drain(policy, fake)
    assert finals_text(events).split() == words
    assert isinstance(events[-1], Flushed)
    assert not any(isinstance(e, Ended) for e in events)


def test_a_short_word_before_a_pause_is_kept() -> None:
    # "But" is 0.15 s of speech (a blip), then a pause, then the sentence.
    spoken = [Spoken(" But", 0.6, 0.75), *script(["I", "am", "pleased"], 1.4)]
    policy, fake = Policy(), FakeWhisper(spoken, unstable_tail=False)
    events = run(policy, fake, 4.0, [(0.6, 0.76), (1.4, 2.6)])
    assert finals_text(events).split() == ["But", "I", "am", "pleased"]


def test_a_lone_blip_is_never_decoded() -> None:
    policy, fake = Policy(), FakeWhisper([Spoken(" uh", 1.0, 1.1)])
    run(policy, fake, 10.0, [(1.0, 1.1)], finish=False)
    assert fake.calls == 0


def test_a_failed_decode_does_not_stall_the_stream() -> None:
    words = ["one", "two", "three"]
    policy, fake = Policy(), FakeWhisper(script(words, 0.5))
    events = []
    probs = vad_probs(4.0, [(0.5, 1.7)])
    policy.feed(np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32), probs)
    policy.finish()
    request = policy.next_request()
    assert request is not None
    policy.apply(request, Hypothesis([], None))  # the session gives up on a region: no words
    events += drain(policy, fake)
    assert isinstance(events[-1], Ended)


@pytest.mark.parametrize("realtime", [True, False])
def test_a_released_decode_loses_no_words(realtime: bool) -> None:
    """A decode that failed or was refused is released, not applied as silence: the region's
    words all become final once a later decode succeeds."""
    words = ["never", "drop", "what", "was", "said", "here"]
    policy, fake = Policy(), FakeWhisper(script(words, 0.5), unstable_tail=False)
    probs = vad_probs(5.0, [(0.5, 2.9)])
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    failures = 0
    events: list = []
    step = 1600 if realtime else len(samples)
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        policy.feed(chunk, probs[start // VAD_CHUNK : (start + len(chunk)) // VAD_CHUNK])
        if (request := policy.next_request()) is not None:
            policy.release(request)  # every first try fails
            failures += 1
            retry = policy.next_request()
            assert retry is not None and retry.offset == request.offset
            assert len(retry.audio) >= len(request.audio)  # the same audio, and any newer
            policy.apply(retry, fake(retry))
        events += policy.events()
    policy.finish()
    request = policy.next_request()
    if request is not None:  # the region's final decode fails too, then succeeds
        policy.release(request)
        failures += 1
    events += drain(policy, fake)
    assert failures >= 1
    assert finals_text(events) == " ".join(words)
    assert isinstance(events[-1], Ended)


def test_release_rejects_a_request_that_is_not_in_flight() -> None:
    policy = Policy()
    probs = vad_probs(3.0, [(0.5, 1.5)])
    policy.feed(np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32), probs)
    request = policy.next_request()
    assert request is not None
    policy.release(request)
    with pytest.raises(ValueError):
        policy.release(request)


def test_apply_rejects_a_request_that_is_not_in_flight() -> None:
    policy = Policy()
    probs = vad_probs(3.0, [(0.5, 1.5)])
    policy.feed(np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32), probs)
    request = policy.next_request()
    assert request is not None
    assert policy.next_request() is None  # one decode at a time
    policy.apply(request, Hypothesis([], "en"))
    with pytest.raises(ValueError):
        policy.apply(request, Hypothesis([], "en"))


def test_detected_language_is_reported_and_reused_within_a_region() -> None:
    class German(FakeWhisper):
        def __call__(self, request: DecodeRequest) -> Hypothesis:
            return Hypothesis(super().__call__(request).words, "de")

    policy = Policy(language=None)
    spoken = script(["eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben"], 0.5)
    fake = German(spoken, unstable_tail=False)
    events = run(policy, fake, 5.0, [(0.5, 3.3)])
    assert {e.language for e in events if isinstance(e, Final)} == {"de"}
    # detected on each window until one of `language_min_s` fixes it, then reused
    detecting = [r for r in fake.requests if r.language is None]
    assert len(detecting) >= 2 and len(detecting[-1].audio) >= 2.0 * SAMPLE_RATE
    assert all(r.language == "de" for r in fake.requests[len(detecting) :])


def test_final_times_never_go_back_even_when_decodes_disagree_on_timestamps() -> None:
    class Jittery(FakeWhisper):
        def __call__(self, request: DecodeRequest) -> Hypothesis:
            shift = -0.08 if self.calls % 2 else 0.0  # every other decode places words earlier
            words = super().__call__(request).words
            return Hypothesis([Word(w.text, w.start + shift, w.end + shift) for w in words], "en")

    policy = Policy()
    fake = Jittery(script([f"w{i}" for i in range(12)], 0.5, per_word=0.3), unstable_tail=False)
    events = run(policy, fake, 6.0, [(0.5, 4.2)])
    words = [w for e in events if isinstance(e, Final) for w in e.words]
    assert [w.text.strip() for w in words] == [f"w{i}" for i in range(12)]
    for earlier, later in zip(words, words[1:], strict=False):
        assert earlier.end <= later.start and later.start <= later.end


class JitterWhisper(FakeWhisper):
    """Word times move by up to `jitter` s from one decode to the next, as Whisper's do."""

    def __init__(self, spoken: list[Spoken], jitter: float) -> None:
        super().__init__(spoken)
        self.jitter = jitter

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        hypothesis = super().__call__(request)
        shift = self.jitter * (1 if self.calls % 3 == 0 else -1 if self.calls % 3 == 1 else 0)
        return Hypothesis(
            [
                replace(w, start=max(0.0, w.start + shift), end=max(0.0, w.end + shift))
                for w in hypothesis.words
            ],  # fmt: skip
            hypothesis.language,
        )


@pytest.mark.parametrize("commit", ["one-pass", "agreement"])
@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.3])
def test_jittery_word_times_neither_repeat_nor_drop_words_and_real_repeats_survive(
    jitter: float, commit: str
) -> None:
    said = "some sung out tear down the fence tear down the fence let me tell you you have seen"
    words = (said + " hold on hold fast hold out").split(" ")
    policy = Policy(PolicyConfig(commit=commit))  # type: ignore[arg-type]
    fake = JitterWhisper(script(words, 0.5), jitter)
    events = run(policy, fake, 12.0, [(0.5, 0.5 + 0.4 * len(words))])
    assert finals_text(events).split() == words


def test_a_word_decoded_again_over_a_committed_one_is_kept() -> None:
    """A later decode may drop a committed word and start the next one where it began
    (fleurs-pt-004: "método de" committed, then "método aprendizado, mas"): the word that
    lies mostly beyond the committed end is new, and nothing committed is repeated."""
    recent = [Word(" método", 2.96, 3.26), Word(" de", 3.26, 3.40)]
    merged = [
        Word(" método", 2.96, 3.26),
        Word(" aprendizado,", 3.26, 3.94),
        Word(" mas", 4.42, 4.52),
    ]
    assert seam(merged, 3.40, recent) == 1
    repeated = [*recent, Word(" aprendizado,", 3.40, 4.02)]
    assert seam(repeated, 3.40, recent) == 2


def test_a_committed_word_merged_into_the_next_is_not_said_twice() -> None:
    """Committed "hard" (of "hard -working"), a later window says "hardworking" from where
    "hard" began: what follows "hard" is new, "hard" is not repeated."""
    recent = [Word(" her", 19.40, 19.66), Word(" hard", 20.02, 20.28, 0.39)]
    merged = [Word(" hardworking", 20.04, 20.56, 0.48), Word(" days.", 20.56, 20.92)]
    new = without_merged_head(merged[seam(merged, 20.28, recent) :], recent)
    assert [w.text for w in new] == [" working", " days."]
    assert new[0].start == 20.28 and new[0].end == 20.56
    hyphen = [Word(" Hard-working", 20.04, 20.56), *merged[1:]]
    assert [w.text for w in without_merged_head(hyphen, recent)] == [" working", " days."]
    # a new word that begins like the committed one, after it, is a word of its own
    recent = [Word(" in", 3.0, 3.12)]
    after = [Word(" introducing", 3.10, 3.70)]
    assert without_merged_head(after, recent) == after
    assert without_merged_head(merged, []) == merged
    short = [Word(" by", 0.5, 0.74), Word(" a", 0.744, 0.944, 0.35)]  # Allah's first sound
    allah = [Word(" Allah", 0.744, 1.184, 0.42)]
    assert without_merged_head(allah, short) == allah
    again = [Word(" hard", 20.04, 20.3)]  # the committed word itself, nothing merged into it
    assert without_merged_head(again, [Word(" hard", 20.02, 20.28)]) == again


def test_a_policy_does_not_repeat_a_committed_word_a_later_window_merged() -> None:
    """The partials split "hard working" into "hard" and an unsure "-working" and commit
    "hard"; the region's last decode says "hardworking" over both: the finals say "hard
    working", not "hard hardworking"."""

    class Merging(FakeWhisper):
        def __call__(self, request: DecodeRequest) -> Hypothesis:
            hypothesis = super().__call__(request)
            words = list(hypothesis.words)
            texts = [w.text for w in words]
            if request.kind == "final" and " hard" in texts and " working" in texts:
                i = texts.index(" hard")
                hard, working = words[i], words[i + 1]
                words[i : i + 2] = [Word(" hardworking", hard.start + 0.02, working.end)]
            elif " working" in texts:
                i = texts.index(" working")
                words[i] = replace(words[i], text="-working", probability=0.2)  # it waits
            return Hypothesis(words, hypothesis.language)

    words = ["into", "her", "dull", "hard", "working", "days"]
    policy, fake = Policy(), Merging(script(words, 1.0), unstable_tail=False)
    events = run(policy, fake, 6.0, [(1.0, 3.4)])
    assert finals_text(events).replace("-", " ").split() == words


def test_a_loop_at_the_end_of_a_window_is_said_once() -> None:
    """Whisper can loop at a window's end ("o que é" about a hundred times, piled up at its
    last instant, fleurs-pt-005): the final says the phrase once and keeps the words before."""

    class Looping(FakeWhisper):
        def __call__(self, request: DecodeRequest) -> Hypothesis:
            hypothesis = super().__call__(request)
            end = len(request.audio) / SAMPLE_RATE
            loop = [Word(w, end, end) for _ in range(100) for w in (" o", " que", " é")]
            return Hypothesis(hypothesis.words + loop, hypothesis.language)

    words = ["a", "consciência", "da", "iluminação", "é", "criada"]
    policy, fake = Policy(), Looping(script(words, 1.0), unstable_tail=False)
    events = run(policy, fake, 6.0, [(1.0, 3.4)])
    assert finals_text(events).split() == [*words, "o", "que", "é"]


def test_words_made_up_after_the_audio_are_not_final() -> None:
    """Whisper can go on after the speech of a region's last window with words the alignment
    squeezes into its last instant, unsure ("again, we'll see you"): the final leaves them out,
    and keeps the words before; a partial still shows what it was given."""

    class MakingUp(FakeWhisper):
        def __call__(self, request: DecodeRequest) -> Hypothesis:
            hypothesis = super().__call__(request)
            end = len(request.audio) / SAMPLE_RATE - 0.02
            made_up = [Word(w, end, end, 0.2) for w in (" again,", " we'll", " see", " you")]
            return Hypothesis(hypothesis.words + made_up, hypothesis.language)

    words = ["it", "must", "be", "in", "the", "neighbourhood"]
    policy, fake = Policy(), MakingUp(script(words, 1.0), unstable_tail=False)
    events = run(policy, fake, 6.0, [(1.0, 3.4)])
    assert finals_text(events).split() == words


def test_a_squeezed_tail_is_made_up_only_when_unsure_and_more_than_a_word() -> None:
    spoken = [Word(" it", 0.0, 0.3), Word(" must", 0.3, 0.6)]
    unsure = [Word(" again,", 0.6, 0.6, 0.16), Word(" we'll", 0.6, 0.6, 0.3)]
    assert without_squeezed_tail(spoken + unsure) == spoken
    sure = [Word(" be", 0.6, 0.6, 0.9), Word(" here", 0.6, 0.6, 0.8)]
    assert without_squeezed_tail(spoken + sure) == spoken + sure
    one = [Word(" again", 0.6, 0.6, 0.1)]
    assert without_squeezed_tail(spoken + one) == spoken + one
    assert without_squeezed_tail(unsure) == []
    assert without_squeezed_tail([]) == []


def test_a_regions_last_decode_does_not_replace_a_surer_word_with_an_unsure_one() -> None:
    """The partials heard "steel" (0.56); the region's last decode, which commits all it says,
    has "Thank (0.26) you. (0.98)" over the same audio: the final says "steel"."""

    class Ending(FakeWhisper):
        def __call__(self, request: DecodeRequest) -> Hypothesis:
            hypothesis = super().__call__(request)
            words = list(hypothesis.words)
            if words and words[-1].text == " steel":
                last = words.pop()
                if request.kind == "final":
                    middle = (last.start + last.end) / 2
                    words += [
                        Word(" Thank", last.start, middle, 0.26),
                        Word(" you.", middle, last.end, 0.98),
                    ]
                else:
                    words.append(replace(last, probability=0.56))
            return Hypothesis(words, hypothesis.language)

    words = ["has", "got", "a", "little", "too", "much", "of", "steel"]
    policy, fake = Policy(), Ending(script(words, 1.0), unstable_tail=False)
    events = run(policy, fake, 7.0, [(1.0, 4.4)])
    assert finals_text(events).split() == words


def test_the_surer_of_two_readings_of_the_same_audio_is_kept() -> None:
    earlier = [Word(" of", 0.0, 0.3, 0.9), Word(" steel.", 0.3, 0.6, 0.56)]
    unsure = [
        Word(" of", 0.0, 0.3, 0.98),
        Word(" Thank", 0.3, 0.35, 0.26),
        Word(" you.", 0.35, 0.5, 0.98),
    ]
    after = [Word(" and", 0.8, 1.0, 0.9)]
    assert surer_of(unsure + after, earlier, 0.3) == unsure[:1] + earlier[1:] + after
    sure = [Word(" of", 0.0, 0.3, 0.98), Word(" steam.", 0.3, 0.6, 0.4)]
    assert surer_of(sure, earlier, 0.3) == sure  # no word of the last decode under 0.3
    doubtful = [earlier[0], replace(earlier[1], probability=0.2)]
    assert surer_of(unsure, doubtful, 0.3) == unsure  # the earlier had one under 0.3 too
    assert surer_of(unsure, [], 0.3) == unsure
    assert surer_of(earlier, earlier, 0.3) == earlier
    assert surer_of(earlier[:1], earlier, 0.3) == earlier[:1]  # nothing of its own to compare


def test_a_phrase_said_a_few_times_is_speech_not_a_loop() -> None:
    def said(text: str) -> list[Word]:
        return [Word(f" {w}", i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(text.split())]

    twice = said("tear down the fence, tear down the fence")
    assert without_loop(twice) == twice
    no = said("no no no no")
    assert without_loop(no) == no
    looped = said("then " + "thank you " * 6)
    assert [w.text for w in without_loop(looped)] == [" then", " thank", " you"]
    assert without_loop([]) == []
    inside = said("yolks of four eggs, " + "1 " * 18 + "one wine glass of sherry")
    assert " ".join(w.text.strip() for w in without_loop(inside)) == (
        "yolks of four eggs, 1 one wine glass of sherry"
    )
    two = said("a " + "b c " * 5 + "d " + "e " * 7)
    assert [w.text.strip() for w in without_loop(two)] == ["a", "b", "c", "d", "e"]


# --------------------------------------------------------------------------- one-pass commit


def one_pass(**overrides: float) -> Policy:
    return Policy(PolicyConfig(commit="one-pass", **overrides))  # type: ignore[arg-type]


def first_final_after(policy: Policy, fake: FakeWhisper, speech_end: float) -> tuple[int, str]:
    """Feed real-time frames; how many decodes ran before the first final, and its text."""
    probs = vad_probs(speech_end + 3.0, [(0.5, speech_end)])
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    per_frame = 1536
    for start in range(0, len(samples), per_frame):
        chunk = samples[start : start + per_frame]
        policy.feed(chunk, probs[start // VAD_CHUNK : (start + len(chunk)) // VAD_CHUNK])
        while (request := policy.next_request()) is not None:
            policy.apply(request, fake(request))
            finals = [e for e in policy.events() if isinstance(e, Final)]
            if finals:
                return fake.calls, finals[0].text
    raise AssertionError("no final")


def test_one_pass_commits_a_word_after_a_single_decode() -> None:
    """At a 2 s step (a loaded server's), the first decode already makes words final;
    LocalAgreement-2 waits for a second decode, 2 s later, to agree with it."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    spoken = script(words, 0.5, per_word=0.5)
    calls_one, text_one = first_final_after(one_pass(step_s=2.0), FakeWhisper(spoken), 5.0)
    agreement = Policy(PolicyConfig(step_s=2.0, commit="agreement"))
    calls_two, text_two = first_final_after(agreement, FakeWhisper(spoken), 5.0)
    assert (calls_one, calls_two) == (1, 2)
    assert text_one.split()[0] == text_two.split()[0] == "alpha"


def test_one_pass_keeps_words_near_the_window_end_and_unsure_words_open() -> None:
    policy = one_pass(guard_s=1.0, min_probability=0.5)
    request, end = first_partial(policy, 5.5, 4.0)
    hypothesis = Hypothesis(
        [
            Word(" sure", 0.5, 0.9, 0.95),
            Word(" also", 1.0, 1.4, 0.9),
            Word(" mumbled", 1.5, 1.9, 0.2),  # unsure: it and what follows stay open
            Word(" after", 2.0, 2.3, 0.95),
            Word(" late", end - 0.6, end - 0.2, 0.99),  # inside the guard
        ],
        "en",
    )
    policy.apply(request, hypothesis)
    events = policy.events()
    assert [e.text for e in events if isinstance(e, Final)] == ["sure also"]
    partial = next(e for e in events if isinstance(e, Partial))
    assert partial.text == "mumbled after late"


@pytest.mark.parametrize("realtime", [True, False])
def test_one_pass_says_every_word_once(realtime: bool) -> None:
    words = [f"w{i}" for i in range(40)]
    policy, fake = one_pass(), FakeWhisper(script(words, 0.5, per_word=0.35))
    events = run(policy, fake, 20.0, [(0.5, 14.6)], realtime=realtime)
    assert finals_text(events) == " ".join(words)


def test_one_pass_commits_an_unsure_word_once_it_is_old() -> None:
    """A low-probability word does not hold the words after it back for ever: once it is
    `max_age_s` old it is committed all the same."""
    policy = one_pass(guard_s=0.5, min_probability=0.5, max_age_s=2.0)
    request, end = first_partial(policy, 7.5, 5.0)
    hypothesis = Hypothesis(
        [
            Word(" old", end - 3.0, end - 2.6, 0.2),  # unsure but 2.6 s old: committed
            Word(" young", end - 1.6, end - 1.2, 0.2),  # unsure and 1.2 s old: stays open
            Word(" sure", end - 1.0, end - 0.8, 0.99),
        ],
        "en",
    )
    policy.apply(request, hypothesis)
    events = policy.events()
    assert [e.text for e in events if isinstance(e, Final)] == ["old"]


def test_one_pass_commits_a_sure_word_after_a_shorter_guard() -> None:
    """With `sure_guard_s`, a word Whisper gave at least `sure_probability` needs only that
    guard; a less sure word still needs `guard_s`, and holds back the words after it."""
    policy = one_pass(guard_s=0.8, min_probability=0.3, sure_guard_s=0.5, sure_probability=0.9)
    request, end = first_partial(policy, 7.5, 5.0)
    hypothesis = Hypothesis(
        [
            Word(" early", end - 2.0, end - 1.5, 0.5),
            Word(" sure", end - 1.2, end - 0.6, 0.95),  # 0.6 s old: sure enough
            Word(" plain", end - 0.6, end - 0.55, 0.6),  # 0.55 s old: needs 0.8
            Word(" quick", end - 0.55, end - 0.5, 0.99),  # held back by "plain"
        ],
        "en",
    )
    policy.apply(request, hypothesis)
    events = policy.events()
    assert [e.text for e in events if isinstance(e, Final)] == ["early sure"]
    assert next(e for e in events if isinstance(e, Partial)).text == "plain quick"


@pytest.mark.parametrize(
    "config", [{"trim_context_s": 0.0}, {"trim_context_s": 1.5, "forced_prefix": True}]
)
def test_a_trimmed_window_starts_at_a_final_word_and_says_every_word_once(
    config: dict[str, float | bool],
) -> None:
    """Without context; and with a forced prefix, which keeps none."""
    words = [f"w{i}" for i in range(60)]
    spoken = script(words, 0.5, per_word=0.35)
    fake = FakeWhisper(spoken, unstable_tail=False)
    events = run(one_pass(trim_s=4.0, **config), fake, 25.0, [(0.5, 21.6)])
    assert finals_text(events) == " ".join(words)
    starts = sorted({round(r.offset, 3) for r in fake.requests})[1:]  # trimmed windows
    assert len(starts) >= 3
    assert all(at in {round(s.end, 3) for s in spoken} for at in starts), starts


def test_a_trimmed_window_keeps_final_words_from_a_phrase_start_as_context() -> None:
    words = [f"w{i}." if i % 4 == 3 else f"w{i}" for i in range(60)]  # a phrase of 4 words
    spoken = script(words, 0.5, per_word=0.35)
    fake = FakeWhisper(spoken, unstable_tail=False)
    events = run(one_pass(trim_s=4.0, trim_context_s=1.5), fake, 25.0, [(0.5, 21.6)])
    assert finals_text(events) == " ".join(words)  # the context's words are not said twice
    starts = sorted({round(r.offset, 3) for r in fake.requests})[1:]  # trimmed windows
    assert len(starts) >= 3
    phrase_gaps = {
        round((before.end + word.start) / 2, 3)
        for before, word in zip(spoken, spoken[1:], strict=False)
        if before.text.endswith(".")
    }
    assert set(starts) <= phrase_gaps, starts  # before a phrase's first word, none of it cut


class UnsureWord(FakeWhisper):
    """Whisper that is never sure of one word; a decode that commits (kind `commit`) gives
    it all the same, as a beam search would."""

    def __init__(self, spoken: list[Spoken], unsure: str) -> None:
        super().__init__(spoken, unstable_tail=False)
        self.unsure = unsure
        self.kinds: list[str] = []

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        self.kinds.append(request.kind)
        words = [
            replace(w, probability=0.1) if w.text.strip() == self.unsure else w
            for w in super().__call__(request).words
        ]
        return Hypothesis(words, "en")


@pytest.mark.parametrize("stall_s", [0.0, 1.0])
def test_a_stalled_unsure_word_is_settled_by_a_thorough_decode(stall_s: float) -> None:
    words = [f"w{i}" for i in range(30)]
    spoken = script(words, 0.5, per_word=0.35)
    fake = UnsureWord(spoken, unsure="w5")
    policy = one_pass(stall_s=stall_s)
    events = run(policy, fake, 11.5, [(0.5, 13.0)], finish=False)  # the region is open
    said = finals_text(events).split()
    if stall_s:
        # w5 and most words after it are final while the region is still open
        assert said == words[: len(said)] and len(said) >= 25
        assert fake.kinds.count("commit") >= 1
        assert "commit" not in fake.kinds[: fake.kinds.index("commit")]  # partials first
    else:
        assert said == words[:5]  # held back until the region ends
        assert "commit" not in fake.kinds
    policy.finish()
    assert finals_text(events + drain(policy, fake)) == " ".join(words)


class MakingUpWhenThorough(UnsureWord):
    """A stalled window decoded thoroughly goes on after the unsure word with words it made
    up: the first given almost no probability and no time ("Thank[0.08, 15.51-15.51 s] you
    for watching." over the speaker's "inscriptions")."""

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        hypothesis = super().__call__(request)
        if request.kind != "commit":
            return hypothesis
        words = list(hypothesis.words)
        at = next(i for i, w in enumerate(words) if w.text.strip() == self.unsure) + 1
        end = words[at - 1].end
        made_up = [Word(" Thank", end, end, 0.08), Word(" you.", end, end + 0.2, 0.97)]
        return Hypothesis(words[:at] + made_up + words[at:], "en")


def test_a_stalled_window_commits_nothing_from_a_word_whisper_did_not_hear() -> None:
    words = [f"w{i}" for i in range(30)]
    fake = MakingUpWhenThorough(script(words, 0.5, per_word=0.35), unsure="w5")
    policy = one_pass(stall_s=1.0)
    events = run(policy, fake, 11.5, [(0.5, 13.0)], finish=False)
    assert "commit" in fake.kinds
    said = finals_text(events).split()
    assert said == words[: len(said)] and len(said) >= 6  # through the unsure word, no more
    policy.finish()
    assert finals_text(events + drain(policy, fake)) == " ".join(words)
    unheard = [Word(" w5", 1.0, 1.4, 0.1), Word(" Thank", 1.4, 1.4, 0.08), Word(" you.", 1.4, 1.6)]
    assert heard_prefix(unheard) == 1
    assert heard_prefix([replace(unheard[1], end=1.5)]) == 1  # it has time: heard, if unsure
    assert heard_prefix([replace(unheard[1], probability=0.5)]) == 1  # no time, but likely


class LoopingOnce(FakeWhisper):
    """One partial decode falls into a loop over words already heard ("the balance of the
    balance of the ..." over "the alimentary canal", its first "balance" at probability
    0.98), and fails Whisper's checks as faster-whisper scores it; the others are right."""

    def __init__(self, spoken: list[Spoken], at_call: int) -> None:
        super().__init__(spoken, unstable_tail=False)
        self.at_call = at_call

    def __call__(self, request: DecodeRequest) -> Hypothesis:
        hypothesis = super().__call__(request)
        if self.calls != self.at_call:
            return hypothesis
        words = list(hypothesis.words)  # the loop takes the place of three words not yet final
        start, end = words[-5].start, words[-3].end
        said = ["balance", "of", "the"] * 2
        step = (end - start) / len(said)
        loop = [
            Word(f" {w}", start + i * step, start + (i + 1) * step, 0.98, words[-5].segment)
            for i, w in enumerate(said)
        ]
        failed = frozenset(w.segment for w in words)
        return Hypothesis(words[:-5] + loop + words[-2:], "en", failed=failed)


def test_a_partial_decode_that_failed_whisper_checks_commits_nothing() -> None:
    words = [f"w{i}" for i in range(16)]
    fake = LoopingOnce(script(words, 0.5, per_word=0.35), at_call=8)
    events = run(one_pass(), fake, 8.0, [(0.5, 6.2)])
    assert fake.calls > 8
    assert finals_text(events) == " ".join(words)
    fake = LoopingOnce(script(words, 0.5, per_word=0.35), at_call=8)
    events = run(one_pass(commit_failed_segments=True), fake, 8.0, [(0.5, 6.2)])
    assert "of the" in finals_text(events), "the loop is what the check keeps out"


def test_backlog_counts_speech_no_decode_has_covered_and_no_silence() -> None:
    words = script(["one", "two", "three", "four", "five", "six"], 3.5, per_word=0.8)
    policy, fake = Policy(), FakeWhisper(words)
    run(policy, fake, 3.0, [], finish=False)  # silence is not kept, so it is no backlog
    assert policy.backlog_s <= 0.5  # only the pad kept before speech might start
    probs = vad_probs(6.0, [(0.0, 6.0)])  # six seconds of speech arrive at once
    policy.feed(np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32), probs)
    assert 6.0 <= policy.backlog_s <= 6.5  # received (with the speech pad), not decoded yet
    request = policy.next_request()
    assert request is not None and policy.backlog_s < 0.5  # a request covers all of it
    policy.release(request)  # a decode that gave nothing: the audio is owed again
    assert policy.backlog_s >= 5.0


# --------------------------------------------------------------------------- decodes in flight


def test_two_partial_decodes_may_run_at_once_but_a_region_end_waits_for_both() -> None:
    words = ["two", "at", "once", "then", "the", "end"]
    policy, fake = one_pass(), FakeWhisper(script(words, 0.5), unstable_tail=False)
    policy.max_in_flight, policy.step_s = 2, 0.25
    probs = vad_probs(6.0, [(0.5, 3.4)])
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    cut = int(2.0 * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK
    policy.feed(samples[:cut], probs[: cut // VAD_CHUNK])
    first = policy.next_request()
    assert first is not None and first.kind == "partial"
    assert policy.next_request() is None  # no new audio since: nothing more to ask
    more = int(0.3 * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK
    policy.feed(samples[cut : cut + more], probs[cut // VAD_CHUNK : (cut + more) // VAD_CHUNK])
    second = policy.next_request()
    assert second is not None and second.kind == "partial"
    assert second.offset == first.offset and len(second.audio) > len(first.audio)
    assert policy.next_request() is None  # two in flight: the limit
    rest = cut + more
    policy.feed(samples[rest:], probs[rest // VAD_CHUNK :])
    policy.finish()
    assert policy.next_request() is None  # the region is closed: its last window waits
    policy.apply(first, fake(first))
    assert policy.next_request() is None
    policy.apply(second, fake(second))
    events = policy.events() + drain(policy, fake)
    assert finals_text(events) == " ".join(words)
    assert isinstance(events[-1], Ended)


def test_an_answer_older_than_one_applied_is_dropped_and_a_release_does_not_rewind() -> None:
    words = ["newer", "wins", "over", "older"]
    policy, fake = one_pass(), FakeWhisper(script(words, 0.5), unstable_tail=False)
    policy.max_in_flight, policy.step_s = 2, 0.25
    probs = vad_probs(6.0, [(0.5, 2.6)])
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    cut = int(2.5 * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK
    more = cut + int(0.5 * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK
    policy.feed(samples[:cut], probs[: cut // VAD_CHUNK])
    older = policy.next_request()
    policy.feed(samples[cut:more], probs[cut // VAD_CHUNK : more // VAD_CHUNK])
    newer = policy.next_request()
    assert older is not None and newer is not None
    policy.apply(newer, fake(newer))  # the newer window's decode ends first
    backlog = policy.backlog_s
    policy.release(older)  # the older one fails: its audio was covered by the newer
    assert policy.backlog_s == backlog
    assert policy.next_request() is None  # no new audio since the newer window
    policy.feed(samples[more:], probs[more // VAD_CHUNK :])
    policy.finish()
    events = policy.events() + drain(policy, fake)
    assert finals_text(events) == " ".join(words)


@pytest.mark.parametrize("seed", range(8))
def test_decodes_finishing_in_any_order_say_every_word_once(seed: int) -> None:
    """Up to two decodes in flight, each finishing after a random number of frames and so
    sometimes after a newer one; some fail. Every word becomes final once, in order, and a
    late answer for less audio never takes words back from the partial."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    spoken = script(words[:20], 0.5) + script(words[20:], 11.5)
    policy, fake = one_pass(), FakeWhisper(spoken, unstable_tail=False)
    policy.max_in_flight, policy.step_s = 2, 0.25
    probs = vad_probs(24.0, [(0.5, 10.5), (11.5, 21.5)])
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    running: list[tuple[int, DecodeRequest]] = []  # (frames left, request)
    events: list = []

    def tick(finishing: bool) -> None:
        nonlocal running
        for left, request in running:
            if left <= 0 or finishing:
                if rng.random() < 0.1:
                    policy.release(request)
                else:
                    policy.apply(request, fake(request))
        running = [(left - 1, r) for left, r in running if left > 0 and not finishing]
        while (request := policy.next_request()) is not None:
            running.append((int(rng.integers(0, 6)), request))
        events.extend(policy.events())

    for start in range(0, len(samples), 1600):
        chunk = samples[start : start + 1600]
        policy.feed(chunk, probs[start // VAD_CHUNK : (start + len(chunk)) // VAD_CHUNK])
        tick(False)
    policy.finish()
    while running or not (events and isinstance(events[-1], Ended)):
        rng.shuffle(running)  # type: ignore[arg-type]
        tick(True)
    assert finals_text(events) == " ".join(words)
    partials = [e for e in events if isinstance(e, Partial)]
    for before, after in zip(partials, partials[1:], strict=False):
        if after.segment_id == before.segment_id:
            assert after.end >= before.end, (before, after)


def test_speech_just_after_a_flush_in_silence_is_not_padded_back_before_it() -> None:
    """A flush (Deepgram's Finalize, OpenAI Realtime's commit) during a pause ends what came
    before: the next region's leading padding does not reach back past it."""
    probs = vad_probs(6.0, [(1.0, 2.0), (3.1, 4.5)])
    policy = Policy()
    feed_between(policy, probs, 0.0, 3.0)
    policy.flush()
    feed_between(policy, probs, 3.0)
    regions = list(policy.endpointer.regions)
    assert len(regions) == 2 and regions[1].start >= int(3.0 * SAMPLE_RATE) // VAD_CHUNK * VAD_CHUNK


@pytest.mark.parametrize("realtime", [True, False])
def test_a_pause_shorter_than_the_end_padding_ends_a_region_within_the_audio(
    realtime: bool,
) -> None:
    # `--min-silence 0.2`: the region closes 0.2 s into the pause, before its 0.3 s of end
    # padding has arrived; the padding stops at the audio received.
    words = ["one", "two", "three", "four", "five", "six"]
    policy = Policy(PolicyConfig(min_silence_s=0.2))
    fake = FakeWhisper(script(words, 1.0))
    events = run(policy, fake, 8.0, [(1.0, 2.6), (2.9, 4.6)], realtime=realtime)
    assert finals_text(events).split() == words


def test_a_seam_does_not_move_back_over_words_said_before_the_committed_end() -> None:
    """Committed "... accord with the picture with" (the last word misheard for "which"), a
    later decode "accord with the picture, which it": its "with" matches the committed last
    word, but "the picture," ended 0.7 s before the committed end, so they are not new: the
    new words start at "which" (2609-156975-0004, jittered replay: "with the picture with the
    picture")."""
    recent = [
        Word(" accord", 12.12, 12.56),
        Word(" with", 12.56, 12.90),
        Word(" the", 12.90, 13.04),
        Word(" picture", 13.04, 13.44),
        Word(" with", 13.42, 14.14, 0.41),
    ]
    again = [
        Word(" accord", 12.14, 12.58),
        Word(" with", 12.58, 12.92),
        Word(" the", 12.92, 13.04),
        Word(" picture,", 13.04, 13.44),
        Word(" which", 14.06, 14.14),
        Word(" it", 14.14, 14.42),
    ]
    assert seam(again, 14.14, recent) == 4
    # drift of a few tenths still moves the cut back over a new word placed early
    recent = recent[:4]  # committed through "picture" (13.44)
    drifted = [*again[:2], Word(" the", 12.8, 12.9), Word(" picture", 12.9, 13.2)]
    drifted.append(Word(" which", 13.2, 13.4))  # placed within the committed time
    assert seam(drifted, 13.44, recent) == 4


def test_a_stream_taken_over_mid_way_goes_on_from_the_offset_with_every_word_once() -> None:
    """Another server decoded the stream's start and died: a policy that `resume_at` its
    offset, with its final words, decodes the audio sent again from there; together the two
    say every word once, numbered on, in the stream's time."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    words += ["and", "runs", "far", "away", "into", "the", "woods"]
    spoken = script(words, 1.0)
    probs = vad_probs(10.0, [(1.0, 1.0 + 0.4 * len(words))])
    first, fake = Policy(PolicyConfig(prompt_chars=200)), FakeWhisper(spoken, unstable_tail=False)
    events: list = []
    for t in np.arange(0.0, 4.0, 0.1):  # the first server: four seconds, decoding as it goes
        feed_between(first, probs, t, t + 0.1)
        events += drain(first, fake)
    before = [e for e in events if isinstance(e, Final)]
    assert before, "the first server made finals"
    offset = first.needed_from_s
    final_words = [w for f in before for w in f.words]

    second = Policy(PolicyConfig(prompt_chars=200))
    second.resume_at(offset, before[-1].segment_id + 1, final_words)
    fake.requests.clear()
    feed_between(second, probs, offset)
    second.finish()
    after = [e for e in drain(second, fake) if isinstance(e, Final)]
    assert finals_text(before + after).split() == words
    assert [f.segment_id for f in before + after] == list(range(len(before) + len(after)))
    assert all(r.offset >= offset - 1e-9 for r in fake.requests)
    assert after[0].start >= before[-1].end, "in the stream's time, after the last final"
    # the audio sent again holds the region's final words: decoded again as context, said once
    assert fake.requests[0].offset <= before[0].start
    assert second.duration == pytest.approx(10.0, abs=0.05)
