"""The Deepgram live dialect, sans-I/O: its query, its messages both ways, and the policy's
marks it needs (a region's last final after a pause or a flush, regions starting and ending)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from scripted import FakeWhisper, script, vad_probs

from whisperwire import protocol as proto
from whisperwire.endpointing import VAD_CHUNK
from whisperwire.policy import Final, Policy, RegionMark, SpeechEnded, SpeechStarted
from whisperwire.protocol import deepgram
from whisperwire.protocol import events as ev

WHEN = datetime(2026, 11, 21, 20, 15, 3, 120456, tzinfo=timezone.utc)
SDK_QUERY = {  # what the official SDK sends for a typical live stream
    "model": "nova-3",
    "encoding": "linear16",
    "sample_rate": "48000",
    "channels": "1",
    "interim_results": "true",
    "endpointing": "300",
    "utterance_end_ms": "1000",
    "vad_events": "true",
    "language": "en-US",
    "punctuate": "true",
    "smart_format": "true",
}


def codec(query: dict[str, str] | None = None) -> proto.Codec:
    c = proto.Codec(languages=frozenset({"en"}), clock=lambda: WHEN, session_id="s1")
    c.model = "tiny.en"
    c.apply_query({**(query or SDK_QUERY), "format": "deepgram"})
    return c


def sent(c: proto.Codec, event: ev.ServerEvent) -> dict[str, Any] | None:
    frame = c.encode(event)
    return None if frame is None else json.loads(frame)


# --------------------------------------------------------------------------- the query


def test_the_sdks_query_becomes_the_sessions_settings() -> None:
    c = codec()
    assert c.config.format == "deepgram"
    assert (c.config.encoding, c.config.sample_rate) == ("s16le", 48000)
    assert c.config.partials is True and c.config.language == "en"
    assert c.listen == deepgram.Listen(
        sample_rate=48000,
        interim_results=True,
        language="en",
        utterance_end_ms=1000,
        vad_events=True,
        endpointing=300,
        model="nova-3",
    )


def test_deepgrams_defaults_no_interim_results_no_vad_events() -> None:
    c = codec({"encoding": "linear16", "sample_rate": "16000"})
    assert c.config.partials is False
    assert c.listen is not None and not c.listen.vad_events and c.listen.utterance_end_ms is None
    assert deepgram.parse_query({"language": "multi"}).language == "auto"
    assert deepgram.parse_query({"endpointing": "false"}).endpointing is None


@pytest.mark.parametrize(("given", "native"), [("mulaw", "mulaw"), ("alaw", "alaw")])
def test_telephony_encodings_are_taken(given: str, native: str) -> None:
    c = codec({"encoding": given, "sample_rate": "8000"})
    assert (c.config.encoding, c.config.sample_rate) == (native, 8000)


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        ({"encoding": "flac"}, proto.UNSUPPORTED_FORMAT, "encoding=linear16"),
        ({"encoding": "opus"}, proto.UNSUPPORTED_FORMAT, "'opus' is not supported"),
        ({"channels": "2"}, proto.UNSUPPORTED_FORMAT, "channels=1"),
        ({"multichannel": "true"}, proto.UNSUPPORTED_FORMAT, "multichannel"),
        ({"sample_rate": "96000"}, proto.INVALID_MESSAGE, "from 8000 to 48000"),
        ({"sample_rate": "16k"}, proto.INVALID_MESSAGE, "sample_rate"),
        ({"interim_results": "maybe"}, proto.INVALID_MESSAGE, "true or false"),
        ({"utterance_end_ms": "soon"}, proto.INVALID_MESSAGE, "milliseconds"),
        ({"endpointing": "-5"}, proto.INVALID_MESSAGE, "milliseconds or false"),
    ],
)
def test_a_value_this_server_cannot_honour_is_a_clear_error(
    query: dict[str, str], code: str, says: str
) -> None:
    with pytest.raises(proto.ProtocolError) as caught:
        deepgram.parse_query({**SDK_QUERY, **query})
    assert caught.value.code == code
    assert says in caught.value.message


def test_a_refusal_is_a_deepgram_error_message() -> None:
    refusal = ev.Error(code=proto.UNSUPPORTED_FORMAT, message="encoding: 'mulaw' …")
    frame = deepgram.DIALECT.encode(refusal, lambda: WHEN)
    assert frame is not None
    assert json.loads(frame) == {
        "type": "Error",
        "variant": "UNSUPPORTED_FORMAT",
        "description": "encoding: 'mulaw' …",
        "message": "",
    }


# --------------------------------------------------------------------------- events -> frames

WORDS = (
    ev.Word(word=" Ask", start=3.5, end=3.7, probability=0.9),
    ev.Word(word=" not,", start=3.7, end=4.0004, probability=0.7),
)


def test_a_partial_is_an_interim_result() -> None:
    partial = ev.Partial(segment_id=1, text=" ask not", stable="", start=3.5, end=4.0, words=WORDS)
    message = sent(codec(), partial)
    assert message is not None
    assert message["type"] == "Results" and message["channel_index"] == [0, 1]
    assert (message["is_final"], message["speech_final"], message["from_finalize"]) == (
        False,
        False,
        False,
    )
    assert (message["start"], message["duration"]) == (3.5, 0.5)
    alternative = message["channel"]["alternatives"][0]
    assert alternative["transcript"] == "ask not"
    assert [w["punctuated_word"] for w in alternative["words"]] == ["Ask", "not,"]
    assert message["metadata"]["request_id"] == "s1"


def test_a_final_is_a_final_result_with_deepgrams_words() -> None:
    final = ev.Final(
        segment_id=1,
        text="Ask not,",
        start=3.5,
        end=4.0004,
        language="en",
        words=WORDS,
        speech_final=True,
    )
    message = sent(codec(), final)
    assert message is not None
    assert (message["is_final"], message["speech_final"], message["from_finalize"]) == (
        True,
        True,
        False,
    )
    alternative = message["channel"]["alternatives"][0]
    assert alternative["transcript"] == "Ask not,"
    assert alternative["confidence"] == 0.8
    assert alternative["words"] == [
        {"word": "ask", "start": 3.5, "end": 3.7, "confidence": 0.9, "punctuated_word": "Ask"},
        {"word": "not", "start": 3.7, "end": 4.0, "confidence": 0.7, "punctuated_word": "not,"},
    ]
    flushed = sent(
        codec(), ev.Final(**{**vars(final), "speech_final": False, "from_finalize": True})
    )
    assert flushed is not None and flushed["from_finalize"] is True


def test_vad_events_and_utterance_end_only_when_asked() -> None:
    started, ended = ev.SpeechStarted(start=0.3), ev.SpeechEnded(end=4.5, last_word_end=4.0)
    asked = codec()
    assert sent(asked, started) == {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.3}
    assert sent(asked, ended) == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 4.0}
    assert sent(asked, ev.SpeechEnded(end=4.5, last_word_end=None)) is None  # no words
    plain = codec({"encoding": "linear16", "sample_rate": "16000"})
    assert sent(plain, started) is None and sent(plain, ended) is None


def test_a_mark_without_words_is_an_empty_final_result() -> None:
    message = sent(codec(), ev.RegionMark(at=6.0, speech_final=False, from_finalize=True))
    assert message is not None and message["channel"]["alternatives"][0]["transcript"] == ""
    assert (message["is_final"], message["speech_final"], message["from_finalize"]) == (
        True,
        False,
        True,
    )


def test_end_of_stream_is_metadata_and_native_state_is_not_sent() -> None:
    c = codec()
    metadata = sent(c, ev.Ended(duration=11.0004, segments=3))
    assert metadata is not None
    assert metadata["type"] == "Metadata" and metadata["request_id"] == "s1"
    assert (metadata["duration"], metadata["channels"]) == (11.0, 1)
    assert metadata["created"] == "2026-11-21T20:15:03.120Z"
    assert metadata["model_info"]["tiny.en"]["name"] == "tiny.en"
    for quiet in (ev.Flushed(), ev.Pong(), ev.Configured(config=c.config)):
        assert c.encode(quiet) is None
    error = sent(c, ev.Error(code=proto.BAD_AUDIO_FRAME, message="3 bytes"))
    assert error == {
        "type": "Error",
        "variant": "BAD_AUDIO_FRAME",
        "description": "3 bytes",
        "message": "",
    }


# --------------------------------------------------------------------------- frames -> messages


def test_control_messages_are_typed() -> None:
    c = codec()
    assert c.receive_text('{"type": "KeepAlive"}') == proto.Ping()
    assert c.receive_text('{"type": "Finalize"}') == proto.Flush()
    assert c.receive_text('{"type": "CloseStream"}') == proto.End()
    assert isinstance(c.receive_binary(b"\0\0" * 160), proto.AudioFrame)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{oops", proto.INVALID_JSON),
        ("[1]", proto.INVALID_MESSAGE),
        ('{"type": "end"}', proto.UNKNOWN_MESSAGE_TYPE),
        ('{"type": "Configure"}', proto.UNKNOWN_MESSAGE_TYPE),
    ],
)
def test_other_text_frames_get_the_contract_code(text: str, code: str) -> None:
    with pytest.raises(proto.ProtocolError) as caught:
        codec().receive_text(text)
    assert caught.value.code == code


# --------------------------------------------------------------------------- the policy's marks


def feed(
    policy: Policy, fake: FakeWhisper, duration: float, speech: list[tuple[float, float]]
) -> list:
    probs = vad_probs(duration, speech)
    samples = np.zeros(len(probs) * VAD_CHUNK, dtype=np.float32)
    events: list = []
    for start in range(0, len(samples), 1536):
        chunk = samples[start : start + 1536]
        policy.feed(chunk, probs[start // VAD_CHUNK : (start + len(chunk)) // VAD_CHUNK])
        while (request := policy.next_request()) is not None:
            policy.apply(request, fake(request))
        events += policy.events()
    return events


def test_a_pause_marks_the_regions_last_final_and_a_flush_its_own() -> None:
    spoken = script(["one", "two", "three"], 0.5) + script(["four", "five"], 4.0)
    policy, fake = Policy(), FakeWhisper(spoken, unstable_tail=False)
    events = feed(policy, fake, 6.0, [(0.5, 1.7), (4.0, 6.0)])  # a pause, then still speaking
    policy.flush()
    while (request := policy.next_request()) is not None:
        policy.apply(request, fake(request))
    events += policy.events()
    finals = [e for e in events if isinstance(e, Final)]
    assert " ".join(f.text for f in finals) == "one two three four five"
    first = [f for f in finals if f.end < 2.0]
    second = [f for f in finals if f.start > 3.0]
    assert [f.speech_final for f in first] == [False] * (len(first) - 1) + [True]
    assert [f.from_finalize for f in first] == [False] * len(first)
    # Its words were all final before the flush: a mark alone says the flush is done.
    assert not any(f.speech_final or f.from_finalize for f in second)
    marks = [e for e in events if isinstance(e, RegionMark)]
    assert marks == [
        RegionMark(at=pytest.approx(6.0, abs=0.05), speech_final=False, from_finalize=True)
    ]
    starts = [e.start for e in events if isinstance(e, SpeechStarted)]
    assert len(starts) == 2 and starts[0] < 0.5 < 3.0 < starts[1] < 4.0
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert [e.last_word_end for e in ends] == [first[-1].end, second[-1].end]


def test_every_flush_is_marked_once_even_with_nothing_to_finalise() -> None:
    policy = Policy()
    feed(policy, FakeWhisper([]), 2.0, [])  # silence: no region is open
    policy.flush()
    policy.flush()
    events = policy.events()
    marks = [e for e in events if isinstance(e, RegionMark)]
    assert [(m.speech_final, m.from_finalize) for m in marks] == [(False, True)] * 2
    assert [type(e).__name__ for e in events] == ["RegionMark", "Flushed"] * 2


@pytest.mark.parametrize(
    ("path", "query", "authorization", "deepgram"),
    [
        ("/v1/listen", {}, "Token k", True),  # the SDKs' key
        ("/v1/listen", {"interim_results": "true"}, None, True),
        ("/v1/listen", {"encoding": "linear16"}, "Bearer k", True),
        ("/v1/listen", {"model": "nova-3"}, None, True),
        ("/v1/listen", {}, None, False),  # the native endpoint's second path
        ("/v1/listen", {"sample_rate": "8000", "encoding": "s16le"}, "Bearer k", False),
        ("/v1/listen", {"token": "k", "format": "text"}, None, False),
        ("/", {"interim_results": "true"}, "Token k", False),  # `/` is always native
    ],
)
def test_a_deepgram_client_is_told_from_a_native_one_at_v1_listen(
    path: str, query: dict[str, str], authorization: str | None, deepgram: bool
) -> None:
    from whisperwire.protocol.deepgram import speaks_deepgram

    assert speaks_deepgram(path, query, authorization) is deepgram
