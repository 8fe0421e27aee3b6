"""The OpenAI Realtime transcription dialect, sans-I/O: its client events read, the policy's
events as OpenAI's (turns, append-only deltas, the completed transcript), its error shape."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest

from whisperwire import protocol as proto
from whisperwire.protocol import events as ev
from whisperwire.protocol import openai_realtime as rt
from whisperwire.protocol import openai_realtime_session as rs

WHEN = datetime(2026, 11, 21, 20, 15, 3, 120456, tzinfo=timezone.utc)
WORD = ev.Word(word=" so", start=0.5, end=0.7, probability=0.9)


def codec() -> proto.Codec:
    c = proto.Codec(languages=frozenset({"en"}), clock=lambda: WHEN, session_id="s1")
    c.apply_query({"format": rt.FORMAT, "intent": "transcription"})
    return c


def read(c: proto.Codec, **event: Any) -> proto.ClientMessage:
    return c.receive_text(json.dumps(event))


def sent(c: proto.Codec, event: ev.ServerEvent) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in c.frames(event)]


def final(text: str, segment: int = 0) -> ev.Final:
    return ev.Final(segment_id=segment, text=text, start=0.5, end=1.0, language="en", words=())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def manual(c: proto.Codec) -> None:
    session = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
    read(c, type="session.update", session=session)


# --------------------------------------------------------------------------- client events


def test_a_session_starts_as_openai_describes_it_24khz_pcm_with_server_vad() -> None:
    c = codec()
    assert (c.config.format, c.config.sample_rate, c.config.encoding) == (
        "openai_realtime",
        24000,
        "s16le",
    )
    assert c.config.partials is False
    ready = ev.Ready(session_id="s1", message="ready", config=c.config)
    (created,) = sent(c, ready)
    assert created["type"] == "session.created" and created["event_id"].startswith("event_")
    session = created["session"]
    assert (session["type"], session["object"]) == ("transcription", "realtime.session")
    assert session["id"].startswith("sess_")
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


def test_session_update_in_the_ga_shape_sets_language_vad_and_format() -> None:
    c = codec()
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": ""},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 200,
                    "silence_duration_ms": 800,
                },
                "noise_reduction": None,
            }
        },
    }
    message = read(c, type="session.update", session=session)
    assert isinstance(message, proto.Config)
    state = c.realtime
    assert state is not None
    assert state.settings.model == "gpt-4o-transcribe" and c.config.language == "en"
    assert state.settings.vad_tuning() == {
        "vad_threshold": 0.6,
        "speech_pad_s": 0.2,
        "min_silence_s": 0.8,
    }
    (updated,) = sent(c, ev.Configured(config=c.config))
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
    # A partial update keeps the rest.
    manual(c)
    assert not state.settings.server_vad and state.settings.model == "gpt-4o-transcribe"


def test_the_beta_shape_is_accepted_and_answered_in_kind() -> None:
    c = codec()
    session = {
        "input_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": None,
    }
    read(c, type="transcription_session.update", session=session)
    assert c.config.sample_rate == 8000
    (updated,) = sent(c, ev.Configured(config=c.config))
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_ulaw"
    assert updated["session"]["turn_detection"] is None


def test_append_decodes_base64_pcm16_at_the_sessions_rate() -> None:
    c = codec()
    pcm = np.arange(-5, 5, dtype="<i2").tobytes()
    frame = read(c, type="input_audio_buffer.append", audio=b64(pcm))
    assert frame == proto.AudioFrame(pcm, "s16le", 24000)
    assert c.audio_started


@pytest.mark.parametrize(("fmt", "encoding"), [("audio/pcmu", "mulaw"), ("audio/pcma", "alaw")])
def test_g711_audio_is_passed_on_in_its_encoding_at_8_khz(fmt: str, encoding: str) -> None:
    c = codec()
    read(c, type="session.update", session={"audio": {"input": {"format": {"type": fmt}}}})
    every = bytes(range(256))
    frame = read(c, type="input_audio_buffer.append", audio=b64(every))
    assert frame == proto.AudioFrame(every, encoding, 8000)


def _update(**given: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"audio": {"input": given}}}


def _append(audio: str) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": audio}


INPUT = "session.audio.input"
BAD = [  # (event, OpenAI's error code, its param, what the message says)
    ({"type": "response.create"}, "unknown_message_type", "type", "input_audio_buffer.append"),
    (_append("%%%"), "base64_decode_error", "audio", "base64"),
    (_append(b64(b"abc")), "bad_audio_frame", "audio", "3 bytes"),
    ({"type": "input_audio_buffer.append"}, "invalid_message", "audio", "base64 string"),
    ({"type": "input_audio_buffer.commit"}, "invalid_message", "input_audio_buffer", "empty"),
    (
        {"type": "session.update", "session": {"type": "realtime"}},
        *("invalid_message", "session.type", "transcription"),
    ),
    (_update(format={"type": "audio/ogg"}), "invalid_message", f"{INPUT}.format.type", "pcmu"),
    (
        _update(turn_detection={"type": "semantic_vad"}),
        *("invalid_message", f"{INPUT}.turn_detection.type", "server_vad"),
    ),
    (
        _update(transcription={"language": "xx"}),
        *("invalid_message", f"{INPUT}.transcription.language", "only knows"),
    ),
    (_update(formt={}), "invalid_message", f"{INPUT}.formt", "unknown parameter"),
]


@pytest.mark.parametrize(("event", "code", "param", "says"), BAD)
def test_a_bad_event_is_an_openai_error_naming_the_problem_and_the_event(
    event: dict[str, Any], code: str, param: str, says: str
) -> None:
    c = codec()
    with pytest.raises(proto.ProtocolError) as caught:
        read(c, event_id="evt_client_1", **event)
    exc = caught.value
    error = ev.Error(code=exc.code, message=exc.message, param=exc.param, event_id=exc.event_id)
    (frame,) = sent(c, error)
    assert frame["type"] == "error" and frame["event_id"].startswith("event_")
    assert frame["error"]["type"] == "invalid_request_error"
    assert frame["error"]["code"] == code
    assert frame["error"]["param"] == param
    assert frame["error"]["event_id"] == "evt_client_1"
    assert says in frame["error"]["message"]
    # The session goes on: a good event is read after it.
    assert isinstance(
        read(c, type="input_audio_buffer.append", audio=b64(b"\0\0")), proto.AudioFrame
    )


def test_bad_json_and_server_errors_keep_openais_shape() -> None:
    c = codec()
    with pytest.raises(proto.ProtocolError) as caught:
        c.receive_text("{not json")
    assert caught.value.code == proto.INVALID_JSON
    (frame,) = sent(c, ev.Error(code=proto.INTERNAL_ERROR, message="incident 1"))
    assert frame["error"] == {
        "type": "server_error",
        "code": "internal_error",
        "message": "incident 1",
        "param": None,
        "event_id": None,
    }
    refusal = json.loads(rt.encode(ev.Error(code=proto.UNAUTHORIZED, message="key"), proto.utc_now))
    assert refusal["type"] == "error" and refusal["error"]["code"] == "unauthorized"


def test_the_format_cannot_change_once_audio_was_appended() -> None:
    c = codec()
    read(c, type="input_audio_buffer.append", audio=b64(b"\0\0"))
    session = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    with pytest.raises(proto.ProtocolError, match="cannot change after audio"):
        read(c, type="session.update", session=session)
    manual(c)  # the turn detection's type can change, not its tuning
    vad = {"type": "server_vad", "silence_duration_ms": 900}
    with pytest.raises(proto.ProtocolError, match="cannot change after audio"):
        read(c, type="session.update", session={"audio": {"input": {"turn_detection": vad}}})


def test_a_binary_frame_is_refused_audio_comes_in_append_events() -> None:
    with pytest.raises(proto.ProtocolError, match="input_audio_buffer.append"):
        codec().receive_binary(bytes(4800))


def test_another_intent_is_refused() -> None:
    with pytest.raises(proto.ProtocolError, match="only transcribes"):
        rt.query({"model": "gpt-realtime", "intent": "conversation"})


# --------------------------------------------------------------------------- turns


def test_server_vad_a_region_is_a_turn_and_completed_is_its_deltas_joined() -> None:
    c = codec()
    (started,) = sent(c, ev.SpeechStarted(start=0.32))
    item = started["item_id"]
    assert (started["type"], started["audio_start_ms"]) == (
        "input_audio_buffer.speech_started",
        320,
    )
    assert sent(c, ev.Partial(segment_id=0, text="And", stable="", start=0.3, end=0.5)) == []
    deltas = [sent(c, final("And so my fellow Americans,"))[0], sent(c, final("ask not."))[0]]
    assert [d["delta"] for d in deltas] == ["And so my fellow Americans,", " ask not."]
    assert {d["item_id"] for d in deltas} == {item}
    stopped, committed, completed = sent(c, ev.SpeechEnded(end=3.2, last_word_end=3.0))
    assert (stopped["type"], stopped["audio_end_ms"], stopped["item_id"]) == (
        "input_audio_buffer.speech_stopped",
        3200,
        item,
    )
    assert committed == {
        "type": "input_audio_buffer.committed",
        "event_id": committed["event_id"],
        "previous_item_id": None,
        "item_id": item,
    }
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert completed["transcript"] == "".join(d["delta"] for d in deltas)
    assert completed["usage"] == {"type": "duration", "seconds": 2.88}
    # The next turn is a new item after it.
    (again,) = sent(c, ev.SpeechStarted(start=5.0))
    assert again["item_id"] != item
    _, committed2, _ = sent(c, ev.SpeechEnded(end=6.0, last_word_end=None))
    assert committed2["previous_item_id"] == item
    ids = [f["event_id"] for f in (started, *deltas, stopped, committed, completed, again)]
    assert len(set(ids)) == len(ids)


def test_manual_commits_regions_are_internal_and_a_commit_completes_the_item() -> None:
    c = codec()
    manual(c)
    read(c, type="input_audio_buffer.append", audio=b64(bytes(48000)))  # 1 s at 24 kHz
    assert isinstance(read(c, type="input_audio_buffer.commit"), proto.Flush)
    assert sent(c, ev.SpeechStarted(start=0.1)) == []
    (delta,) = sent(c, final("Hello there."))
    assert sent(c, ev.SpeechEnded(end=0.9, last_word_end=0.8)) == []
    assert sent(c, ev.RegionMark(at=1.0, speech_final=False, from_finalize=True)) == []
    committed, completed = sent(c, ev.Flushed())
    assert committed["type"] == "input_audio_buffer.committed"
    assert committed["item_id"] == completed["item_id"] == delta["item_id"]
    assert completed["transcript"] == "Hello there."
    assert completed["usage"]["seconds"] == 1.0
    # A commit with nothing appended since is refused.
    with pytest.raises(proto.ProtocolError, match="empty"):
        read(c, type="input_audio_buffer.commit")


def test_server_vad_a_commit_that_cut_a_region_adds_nothing_else_completes_the_rest() -> None:
    c = codec()
    read(c, type="input_audio_buffer.append", audio=b64(bytes(4800)))
    read(c, type="input_audio_buffer.commit")
    sent(c, ev.SpeechStarted(start=0.0))
    sent(c, final("Hi."))
    assert len(sent(c, ev.SpeechEnded(end=0.1, last_word_end=0.05))) == 3
    assert sent(c, ev.Flushed()) == []
    read(c, type="input_audio_buffer.append", audio=b64(bytes(4800)))
    read(c, type="input_audio_buffer.commit")  # silence only: an empty turn
    committed, completed = sent(c, ev.Flushed())
    assert committed["type"] == "input_audio_buffer.committed" and completed["transcript"] == ""


def test_clear_drops_the_text_before_it_and_keeps_the_turn_that_starts_after() -> None:
    c = codec()
    read(c, type="input_audio_buffer.append", audio=b64(bytes(4800)))
    (started,) = sent(c, ev.SpeechStarted(start=0.0))
    sent(c, final("Sent already."))
    assert isinstance(read(c, type="input_audio_buffer.clear"), proto.Flush)
    assert sent(c, final("dropped")) == []
    assert sent(c, ev.SpeechEnded(end=0.2, last_word_end=0.1)) == []
    assert sent(c, ev.SpeechStarted(start=0.5)) == []  # held: the next turn's, or dropped
    cleared, restarted = sent(c, ev.Flushed())
    assert cleared["type"] == "input_audio_buffer.cleared"
    assert restarted["type"] == "input_audio_buffer.speech_started"
    assert restarted["item_id"] != started["item_id"] and restarted["audio_start_ms"] == 500
    (delta,) = sent(c, final("Kept."))
    assert delta["delta"] == "Kept." and delta["item_id"] == restarted["item_id"]
    *_, completed = sent(c, ev.SpeechEnded(end=1.0, last_word_end=0.9))
    assert completed["transcript"] == "Kept."
    # A commit after a clear with nothing appended is empty.
    with pytest.raises(proto.ProtocolError, match="empty"):
        read(c, type="input_audio_buffer.commit")


def test_events_the_dialect_does_not_send() -> None:
    c = codec()
    for event in (
        ev.Pong(),
        ev.Ended(duration=1.0, segments=0),
        ev.RegionMark(at=1.0, speech_final=True, from_finalize=False),
    ):
        assert sent(c, event) == []
    assert c.encode(final("text")) is None  # several frames may stand for one event: `frames`


def test_settings_describe_round_trips_through_parse() -> None:
    settings = rs.Settings.for_server(0.5, 0.4, 0.5)
    described = settings.describe("sess_1")["audio"]["input"]
    again = rs.parse({"type": "transcription", "audio": {"input": described}}, rs.Settings())
    assert again.turn_detection == settings.turn_detection
    assert again.input_key == settings.input_key == ("audio/pcm", 24000)
