"""Every server event, encoded in both dialects from one list.

The native (JSON) encoding of each event must have exactly the fields docs/protocol.md
documents for that message, in the order the server has always sent them, with times to the
millisecond and the injected clock's `timestamp`; the whisper.cpp text dialect sends only
the connection id, final texts and clip transcriptions. Events only another dialect sends
(Deepgram's VAD events) are sent by neither, and fields only another dialect uses
(`speech_final`, `from_finalize`) are not on the native wire.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, get_args

import pytest

from whisperwire import protocol as proto
from whisperwire.protocol import events as ev
from whisperwire.protocol import native, whispercpp

WHEN = datetime(2026, 11, 21, 20, 15, 3, 120456, tzinfo=timezone.utc)
STAMP = "2026-11-21T20:15:03.120Z"
SID = "6e7d5e45-c8b2-400b-b867-7618fe08ec5b"
CONFIG = proto.StreamConfig()
CONFIG_FIELDS = ["sample_rate", "encoding", "language", "task", "partials", "format"]
SESSION_CONFIG = ev.SessionConfig(
    **CONFIG.model_dump(), max_message_bytes=134217728, model="tiny.en", languages=["en"]
)
WORD = ev.Word(word=" And", start=0.32049, end=0.6, probability=0.87123)
SEGMENT = ev.ClipSegment(start=0.0, end=8.0649, text="And so", window=0.0)
STATUS = {"state": "ready", "session_id": SID, "duration": 11.00049, "queued_jobs": 0, "step": 0.5}

# (event, its documented fields in wire order (None: not sent), what the text dialect sends)
EVENTS: list[tuple[ev.ServerEvent, list[str] | None, str | None]] = [
    (
        ev.Ready(session_id=SID, message="ready", config=SESSION_CONFIG),
        ["type", "state", "session_id", "message", "config"],
        f"CONNECTION_ID:{SID}",
    ),
    (
        ev.Ready(
            session_id=SID, resumed=True, audio_offset=35.0004, message="resumed", config=CONFIG
        ),
        ["type", "state", "session_id", "resumed", "audio_offset", "message", "config"],
        f"CONNECTION_ID:{SID}",
    ),
    (
        ev.Partial(
            segment_id=0, text="And so my", stable="And so", start=0.32049, end=3.1, words=(WORD,)
        ),
        ["type", "segment_id", "text", "stable", "start", "end"],
        None,
    ),
    (
        ev.Final(
            segment_id=0,
            text="And so, my fellow Americans,",
            start=0.32049,
            end=3.02,
            language="en",
            words=(WORD,),
        ),
        ["type", "segment_id", "text", "start", "end", "language", "words"],
        "And so, my fellow Americans,",
    ),
    (
        ev.Final(
            segment_id=1,
            text="ask not",
            start=3.5,
            end=4.0,
            language="en",
            words=(),
            speech_final=True,
            from_finalize=True,
        ),
        ["type", "segment_id", "text", "start", "end", "language", "words"],
        "ask not",
    ),
    (ev.SpeechStarted(start=0.3), None, None),
    (ev.SpeechEnded(end=4.2, last_word_end=4.0), None, None),
    (ev.RegionMark(at=4.2, speech_final=False, from_finalize=True), None, None),
    (ev.Flushed(), ["type", "state"], None),
    (ev.Ended(duration=11.00049, segments=3), ["type", "duration", "segments"], None),
    (ev.Configured(config=CONFIG), ["type", "state", "config"], None),
    (ev.Pong(), ["type", "state", "message"], None),
    (
        ev.StatusReport(**STATUS, load={"live_streams": 1, "capacity": 3}),  # type: ignore[arg-type]
        ["type", "state", "session_id", "duration", "queued_jobs", "step", "load"],
        f"CONNECTION_ID:{SID}",  # as the dialect has always answered an idle `status`
    ),
    (
        ev.StatusReport(
            **{**STATUS, "state": "processing"},  # type: ignore[arg-type]
            audio_id="interview-3",
            progress=0.42,
            clips_queued=0,
        ),
        ["type", "state", "session_id", "duration", "queued_jobs", "step"]
        + ["audio_id", "progress", "clips_queued"],
        None,
    ),
    (ev.Error(code=proto.INVALID_JSON, message="oops"), ["type", "code", "message"], None),
    (
        ev.Error(code=proto.OVERLOADED, message="full", audio_id="a", retry_after=10.0),
        ["type", "code", "message", "audio_id", "retry_after"],
        None,
    ),
    (
        ev.ClipProcessing(audio_id="interview-3", progress=0.0, queued=0),
        ["type", "state", "audio_id", "progress", "queued"],
        None,
    ),
    (
        ev.Transcription(
            transcription="And so",
            audio_id="interview-3",
            language="en",
            duration=11.0,
            segments=(SEGMENT,),
        ),
        ["type", "transcription", "audio_id", "language", "duration", "segments"],
        "And so",
    ),
    (ev.ClipReady(audio_id=None), ["type", "state", "audio_id"], None),
    (
        ev.ForwardReply(batch=1, segment_ids=[0, 1], status=200, response="ok", error=None),
        ["type", "batch", "segment_ids", "status", "response", "error"],
        None,
    ),
]


def test_the_list_holds_every_event_type() -> None:
    assert {type(event) for event, _, _ in EVENTS} == set(get_args(ev.ServerEvent))


@pytest.mark.parametrize(("event", "fields", "text"), EVENTS, ids=lambda x: type(x).__name__)
def test_each_event_in_both_dialects(
    event: ev.ServerEvent, fields: list[str] | None, text: str | None
) -> None:
    frame = native.DIALECT.encode(event, lambda: WHEN)
    assert whispercpp.encode(event, lambda: WHEN) == text
    if fields is None:
        assert frame is None
        return
    assert frame is not None
    message = json.loads(frame)
    assert list(message) == [*fields, "timestamp"]
    assert message["timestamp"] == STAMP
    assert message["type"] == event.TYPE


def test_nested_fields_are_documented_and_times_go_to_the_millisecond() -> None:
    def encoded(event: ev.ServerEvent) -> dict[str, Any]:
        return json.loads(native.encode(event, lambda: WHEN))

    greeting, resumed, _, final = (encoded(e) for e, _, _ in EVENTS[:4])
    assert list(greeting["config"]) == [*CONFIG_FIELDS, "max_message_bytes", "model", "languages"]
    assert list(resumed["config"]) == CONFIG_FIELDS and resumed["audio_offset"] == 35.0
    assert final["start"] == 0.32
    assert final["words"] == [{"word": " And", "start": 0.32, "end": 0.6, "probability": 0.871}]
    transcription = encoded(next(e for e, _, _ in EVENTS if isinstance(e, ev.Transcription)))
    assert transcription["segments"] == [
        {"start": 0.0, "end": 8.065, "text": "And so", "window": 0.0}
    ]


def test_null_is_sent_but_an_unset_field_is_left_out() -> None:
    ready = json.loads(native.encode(ev.ClipReady(audio_id=None), lambda: WHEN))
    assert ready["audio_id"] is None
    reply = ev.ForwardReply(
        batch=2, segment_ids=[3], status=None, response=None, error="refused", body=None
    )
    assert list(native.payload(reply)) == [
        "type", "batch", "segment_ids", "status", "response", "error", "body"
    ]  # fmt: skip
    assert "body" not in native.payload(ev.ForwardReply(**{**vars(reply), "body": ev.UNSET}))
