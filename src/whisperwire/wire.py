"""The streaming policy's events as the protocol's events: what the client is told."""

from __future__ import annotations

from collections.abc import Iterable

from whisperwire import policy
from whisperwire.protocol import events as ev
from whisperwire.words import Word


def _words(words: Iterable[Word]) -> tuple[ev.Word, ...]:
    return tuple(
        ev.Word(word=w.text, start=w.start, end=w.end, probability=w.probability) for w in words
    )


def wire_event(event: policy.Event) -> ev.ServerEvent:
    """The policy's event as the client is told it."""
    if isinstance(event, policy.Partial):
        return ev.Partial(
            segment_id=event.segment_id,
            text=event.text,
            stable=event.stable,
            start=event.start,
            end=event.end,
            words=_words(event.words),
        )
    if isinstance(event, policy.Final):
        words = _words(event.words)
        return ev.Final(
            segment_id=event.segment_id,
            text=event.text,
            start=event.start,
            end=event.end,
            language=event.language,
            words=words,
            speech_final=event.speech_final,
            from_finalize=event.from_finalize,
        )
    if isinstance(event, policy.SpeechStarted):
        return ev.SpeechStarted(start=event.start)
    if isinstance(event, policy.SpeechEnded):
        return ev.SpeechEnded(end=event.end, last_word_end=event.last_word_end)
    if isinstance(event, policy.RegionMark):
        flags = {"speech_final": event.speech_final, "from_finalize": event.from_finalize}
        return ev.RegionMark(at=event.at, **flags)
    if isinstance(event, policy.Flushed):
        return ev.Flushed()
    return ev.Ended(duration=event.duration, segments=event.segments)
