"""A session's committed words (`Transcript`): held, made final, and the context they give
the next window."""

from __future__ import annotations

from whisperwire.transcript import Transcript
from whisperwire.words import Word


def words(*spans: tuple[str, float, float]) -> list[Word]:
    return [Word(f" {text}", start, end, 0.9) for text, start, end in spans]


def test_committed_words_never_go_back_in_time_and_are_held_until_taken() -> None:
    transcript = Transcript()
    transcript.commit(words(("and", 1.0, 1.2), ("so", 1.3, 1.5)), now=2.2)
    transcript.commit(words(("my", 1.45, 1.7)), now=2.7)  # a later decode places it earlier
    assert [w.start for w in transcript.held] == [1.0, 1.3, 1.5]
    assert (transcript.count, transcript.held_since, transcript.committed_end) == (3, 2.2, 1.7)
    assert transcript.phrase_cut(now=2.7, max_hold_s=2.0) == 0  # no phrase end yet
    assert transcript.phrase_cut(now=4.2, max_hold_s=2.0) == 3  # held long enough

    assert [w.text for w in transcript.take(2)] == [" and", " so"]
    assert [w.text for w in transcript.held] == [" my"] and transcript.final_end == 1.5


def test_a_phrase_end_makes_the_words_through_it_final() -> None:
    transcript = Transcript()
    transcript.commit(words(("fellow", 1.0, 1.4), ("americans,", 1.5, 2.0), ("ask", 2.3, 2.5)), 3)
    assert transcript.phrase_cut(now=3.0, max_hold_s=2.0) == 2


def test_the_prompt_is_the_final_text_before_a_window_and_the_prefix_what_is_in_it() -> None:
    transcript = Transcript()
    transcript.commit(words(("one", 0.0, 0.4), ("two", 0.5, 0.9), ("three", 1.0, 1.4)), 2.0)
    transcript.take(3)
    transcript.commit(words(("four", 1.5, 1.9)), 2.5)
    assert transcript.prompt(start=0.95, limit=100) == "one two"
    assert transcript.prompt(start=0.95, limit=3) == "two"
    assert transcript.prompt(start=0.95, limit=0) == ""
    assert transcript.prefix(start=0.95) == ("three four", True)  # final and held alike
    assert transcript.prefix(start=0.6) == ("three four", True)  # "two", cut by the start, is not
    assert transcript.prefix(start=0.95, min_probability=0.95) == ("", False)  # none is sure
    transcript.commit(words(("five.", 2.0, 2.4)), 3.0)
    assert transcript.prefix(start=0.95) == ("three four five", True)  # "." left to Whisper


def test_a_trimmed_window_keeps_context_from_the_phrase_start_within_its_span() -> None:
    t = Transcript()
    said = [(" One", 0.0, 0.4), (" two.", 0.5, 0.9), (" Three", 1.1, 1.5), (" four", 1.6, 2.0),
            (" five", 2.1, 2.5), (" six", 2.6, 3.0)]  # fmt: skip
    t.commit([Word(text, a, b, 0.9) for text, a, b in said], 3.0)
    t.take(len(t.held))
    assert t.context_start(0.0) == 3.0  # no context: the last final word's end
    assert t.context_start(2.0) == 1.0  # "Three" begins a phrase: halfway through the gap
    assert t.context_start(1.2) == 2.05  # no phrase start within 1.2 s: the first word in it
    assert t.context_start(60.0) == 1.0  # from a phrase start, not the oldest word
