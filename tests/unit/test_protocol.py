"""The sans-I/O codec: frames in, typed messages or contract errors out; events out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from whisperwire import protocol as proto
from whisperwire.protocol import events as ev
from whisperwire.protocol import native


def codec(**kw: object) -> proto.Codec:
    return proto.Codec(languages=frozenset({"en", "de"}), **kw)  # type: ignore[arg-type]


def error_code(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(proto.ProtocolError) as info:
        fn(*args)
    assert info.value.message, "every error carries a message a person can act on"
    return info.value.code


def test_simple_messages() -> None:
    c = codec()
    assert isinstance(c.receive_text('{"type":"ping"}'), proto.Ping)
    assert isinstance(c.receive_text('{"type":"status"}'), proto.Status)
    assert isinstance(c.receive_text('{"type":"flush"}'), proto.Flush)
    assert isinstance(c.receive_text('{"type":"end"}'), proto.End)
    assert isinstance(c.receive_text('{"type":"eof"}'), proto.End)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", proto.INVALID_JSON),
        ("[1, 2]", proto.INVALID_MESSAGE),
        ('{"kind":"ping"}', proto.INVALID_MESSAGE),
        ('{"type":"dance"}', proto.UNKNOWN_MESSAGE_TYPE),
        ('{"type":"config","sample_rate":4000}', proto.INVALID_MESSAGE),
        ('{"type":"config","sample_rate":"fast"}', proto.INVALID_MESSAGE),
        ('{"type":"config","encoding":"mp3"}', proto.INVALID_MESSAGE),
        ('{"type":"config","language":"xx"}', proto.INVALID_MESSAGE),
        ('{"type":"config","task":"summarise"}', proto.INVALID_MESSAGE),
        ('{"type":"config","partials":"maybe"}', proto.INVALID_MESSAGE),
        ('{"type":"config","volume":11}', proto.INVALID_MESSAGE),
        ('{"type":"audio"}', proto.INVALID_MESSAGE),
        ('{"type":"audio","audio_data":42}', proto.INVALID_MESSAGE),
        ('{"type":"audio","audio_data":"AAAA","format":"hex"}', proto.UNSUPPORTED_FORMAT),
        ('{"type":"audio","audio_data":"AAAA","language":"xx"}', proto.INVALID_MESSAGE),
    ],
)
def test_bad_text_frames_get_the_contract_code(text: str, code: str) -> None:
    c = codec()
    assert error_code(c.receive_text, text) == code
    assert isinstance(c.receive_text('{"type":"ping"}'), proto.Ping)  # still usable


def test_config_changes_settings_and_a_bad_one_changes_nothing() -> None:
    c = codec()
    c.receive_text('{"type":"config","sample_rate":44100,"encoding":"f32le","language":"de"}')
    assert (c.config.sample_rate, c.config.encoding, c.config.language) == (44100, "f32le", "de")
    error_code(c.receive_text, '{"type":"config","sample_rate":44100,"task":"nope"}')
    assert c.config.task == "transcribe" and c.config.sample_rate == 44100


def test_sample_rate_and_encoding_are_locked_after_audio() -> None:
    c = codec()
    c.receive_binary(b"\x00\x00" * 10)
    message = '{"type":"config","sample_rate":8000}'
    assert error_code(c.receive_text, message) == proto.INVALID_MESSAGE
    assert c.config.sample_rate == 16000
    c.receive_text('{"type":"config","sample_rate":16000,"language":"de"}')  # unchanged: fine
    assert c.config.language == "de"


def test_binary_frames_must_hold_whole_samples() -> None:
    c = codec()
    assert error_code(c.receive_binary, b"\x00\x01\x02") == proto.BAD_AUDIO_FRAME
    assert error_code(c.receive_binary, b"") == proto.BAD_AUDIO_FRAME
    frame = c.receive_binary(b"\x00\x01")
    assert frame == proto.AudioFrame(b"\x00\x01", "s16le", 16000)
    c = codec()
    c.receive_text('{"type":"config","encoding":"f32le"}')
    assert error_code(c.receive_binary, b"\x00" * 6) == proto.BAD_AUDIO_FRAME


def test_messages_over_the_limit_are_refused() -> None:
    c = codec(max_message_bytes=100)
    assert error_code(c.receive_binary, b"\x00" * 102) == proto.MESSAGE_TOO_BIG
    assert error_code(c.receive_text, json.dumps({"type": "x" * 200})) == proto.MESSAGE_TOO_BIG
    # counted in UTF-8 bytes as sent, not in characters: 60 "é" are 120 bytes
    accented = '{"type":"ping","x":"' + "é" * 60 + '"}'
    assert len(accented) < 100 < len(accented.encode())
    assert error_code(c.receive_text, accented) == proto.MESSAGE_TOO_BIG
    assert isinstance(c.receive_text('{"type":"ping","x":"' + "é" * 30 + '"}'), proto.Ping)


def test_query_parameters_are_validated_like_config() -> None:
    c = codec()
    c.apply_query({"sample_rate": "8000", "partials": "false", "format": "text", "token": "k"})
    assert (c.config.sample_rate, c.config.partials, c.config.format) == (8000, False, "text")
    assert error_code(c.apply_query, {"encoding": "ulaw"}) == proto.INVALID_MESSAGE


def test_clip_message_fields() -> None:
    c = codec()
    clip = c.receive_text('{"type":"audio","audio_data":"AAAA","audio_id":7,"language":"de"}')
    assert clip == proto.ClipAudio("7", "base64", "AAAA", "de", None)
    assert c.config.language == "en", "a clip's language does not change the session"


def test_json_events_are_stamped_by_the_injected_clock_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    c = codec(clock=lambda: datetime(2026, 11, 21, 21, 15, 3, 120999, tzinfo=paris))
    frame = c.encode(ev.Pong())
    assert frame is not None
    assert json.loads(frame) == {
        "type": "state",
        "state": "pong",
        "message": "pong",
        "timestamp": "2026-11-21T20:15:03.120Z",
    }


def test_the_format_picks_the_dialect_for_the_rest_of_the_session() -> None:
    c = codec()
    assert c.encode(ev.Pong()) is not None
    c.receive_text('{"type":"config","format":"text"}')
    assert c.encode(ev.Pong()) is None
    assert isinstance(c.receive_text('{"type":"ping"}'), proto.Ping), "read as natively"


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"config","sample_rate":' + "1" * 5000 + "}",
        '{"type":"ping","n":' + "9" * 4301 + "}",
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_numbers_and_nesting_past_pythons_limits_are_invalid_json(text: str) -> None:
    c = codec()
    with pytest.raises(proto.ProtocolError) as info:
        c.receive_text(text)
    assert info.value.code == proto.INVALID_JSON
    assert "sys.set_int_max_str_digits" not in info.value.message  # no Python advice
    assert isinstance(c.receive_text('{"type":"ping"}'), proto.Ping)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"config","\\ud800":1}',  # a lone surrogate in an unknown field's name
        '{"type":"audio","audio_id":"\\udfff","format":"opus","audio_data":""}',
        '{"type":"\\ud83d"}',
    ],
)
def test_an_error_about_a_lone_surrogate_can_be_sent(text: str) -> None:
    """The error frame must be valid UTF-8, or the session could not send it (nor anything
    after it)."""
    with pytest.raises(proto.ProtocolError) as info:
        codec().receive_text(text)
    event = ev.Error(
        code=info.value.code, message=info.value.message, audio_id=info.value.clip or ev.UNSET
    )
    frame = native.encode(event, proto.utc_now)
    frame.encode("utf-8")  # raises if a surrogate got through
    assert json.loads(frame)["code"] == info.value.code


def test_an_event_that_carries_a_client_id_with_a_surrogate_is_escaped() -> None:
    frame = native.encode(ev.ClipProcessing(audio_id="a\ud800b", progress=0.0), proto.utc_now)
    assert json.loads(frame)["audio_id"] == "a\ud800b"  # the same id, escaped in transit
    frame.encode("utf-8")


def test_errors_quote_at_most_a_little_of_what_the_client_sent() -> None:
    for text in (
        json.dumps({"type": "x" * 1_000_000}),
        json.dumps({"type": "config", "y" * 1_000_000: 1}),
        json.dumps({"type": "config", "language": "z" * 1_000_000}),
        json.dumps({"type": "audio", "format": "w" * 1_000_000, "audio_data": ""}),
    ):
        with pytest.raises(proto.ProtocolError) as info:
            codec().receive_text(text)
        assert len(info.value.message) < 400, info.value.message[:100]


@pytest.mark.parametrize("value", [" 16000", "16000 ", "+16000", "１６０００", "16_000", True])
def test_a_sample_rate_must_be_a_plain_integer(value: object) -> None:
    text = json.dumps({"type": "config", "sample_rate": value})
    assert error_code(codec().receive_text, text) == proto.INVALID_MESSAGE


@pytest.mark.parametrize("audio_id", ["true", "false", "1.5", "[]", "{}"])
def test_an_audio_id_that_is_not_a_string_or_integer_is_refused(audio_id: str) -> None:
    text = '{"type": "audio", "audio_data": "", "audio_id": ' + audio_id + "}"
    with pytest.raises(proto.ProtocolError) as info:
        codec().receive_text(text)
    assert info.value.code == proto.INVALID_MESSAGE and "audio_id" in info.value.message


def test_a_long_audio_id_is_refused() -> None:
    text = json.dumps({"type": "audio", "audio_id": "i" * 300, "audio_data": ""})
    with pytest.raises(proto.ProtocolError) as info:
        codec().receive_text(text)
    assert info.value.code == proto.INVALID_MESSAGE and "256" in info.value.message
    assert info.value.clip is not None and len(info.value.clip) == 256
