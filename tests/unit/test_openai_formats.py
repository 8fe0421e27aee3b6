"""The OpenAI API's pure parts: parameters checked, each response format written."""

from __future__ import annotations

import io
import json

import pytest
import srt
import webvtt

from whisperwire.openai_formats import (
    AudioRequest,
    Deltas,
    OpenAIError,
    Segment,
    Transcript,
    Word,
    parse_request,
    render,
    timestamp,
)

LANGUAGES = frozenset({"en", "de", "fr"})
SEGMENTS = (
    Segment(
        0, 0, 0.0, 2.5, " Hello there.", words=(Word("Hello", 0.0, 0.4), Word("there.", 0.5, 2.5))
    ),
    Segment(1, 0, 2.5, 3661.25, " General --> Kenobi.", words=(Word("General", 2.6, 3.0),)),
)
TRANSCRIPT = Transcript("transcribe", "en", 3662.0, SEGMENTS)


def parse(task: str = "transcribe", **fields: str | list[str]) -> AudioRequest:
    form = {k: v if isinstance(v, list) else [v] for k, v in fields.items()}
    return parse_request(task, form, LANGUAGES)  # type: ignore[arg-type]


def refused(param: str, task: str = "transcribe", **fields: str | list[str]) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        parse(task, **fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert caught.value.body()["error"]["type"] == "invalid_request_error"
    return caught.value


# --------------------------------------------------------------------------- parameters


def test_defaults_are_openais() -> None:
    request = parse(model="whisper-1")
    assert request == AudioRequest(task="transcribe", model="whisper-1")
    assert request.response_format == "json" and not request.stream and not request.words


def test_every_parameter_is_read() -> None:
    request = parse(
        model="anything",
        language="DE",
        prompt="Kenobi",
        temperature="0.4",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert request.language == "de" and request.prompt == "Kenobi"
    assert request.temperature == 0.4 and request.words
    assert request.granularities == {"word", "segment"}


def test_temperature_zero_is_the_fallback_ladder() -> None:
    assert parse(temperature="0").temperature is None
    assert parse(temperature="0.0").temperature is None


@pytest.mark.parametrize("value", ["2", "-0.1", "nan", "warm"])
def test_a_bad_temperature_is_refused(value: str) -> None:
    refused("temperature", temperature=value)


def test_bad_parameters_are_refused_naming_them() -> None:
    assert "xml" in refused("response_format", response_format="xml").message
    assert "'klingon'" in refused("language", language="klingon").message
    refused("timestamp_granularities[]", **{"timestamp_granularities[]": "word"})  # json
    refused(
        "timestamp_granularities[]",
        response_format="verbose_json",
        **{"timestamp_granularities[]": "sentence"},
    )
    refused("stream", stream="maybe")
    refused("stream", stream="true", response_format="srt")
    refused("model", model=["a", "b"])
    refused("colour", colour="blue")


def test_translations_take_no_language() -> None:
    refused("language", task="translate", language="de")
    assert parse("translate").task == "translate"


def test_an_english_only_model_names_its_one_language() -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_request("transcribe", {"language": ["de"]}, frozenset({"en"}))
    assert "only knows 'en'" in caught.value.message


def test_stream_is_read_as_the_sdk_sends_it() -> None:
    assert parse(stream="true").stream and not parse(stream="false").stream


# --------------------------------------------------------------------------- answers


def test_timestamps() -> None:
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(3661.2505, ".") == "01:01:01.250"
    assert timestamp(59.9996, ",") == "00:01:00,000"


def test_json_and_text() -> None:
    assert json.loads(render(TRANSCRIPT, parse()))["text"] == "Hello there. General --> Kenobi."
    assert render(TRANSCRIPT, parse(response_format="text")) == "Hello there. General --> Kenobi.\n"


def test_srt_parses_with_a_real_parser() -> None:
    cues = list(srt.parse(render(TRANSCRIPT, parse(response_format="srt"))))
    assert [c.index for c in cues] == [1, 2]
    assert [c.content for c in cues] == ["Hello there.", "General -> Kenobi."]
    assert cues[1].end.total_seconds() == pytest.approx(3661.25)


def test_vtt_parses_with_a_real_parser() -> None:
    text = render(TRANSCRIPT, parse(response_format="vtt"))
    cues = list(webvtt.from_buffer(io.StringIO(text)))
    assert [(c.start, c.end, c.text) for c in cues] == [
        ("00:00:00.000", "00:00:02.500", "Hello there."),
        ("00:00:02.500", "01:01:01.250", "General -> Kenobi."),
    ]


def test_a_cue_never_ends_before_it_starts_and_empty_segments_are_left_out() -> None:
    segments = (Segment(0, 0, 1.0, 1.0, " Hm."), Segment(1, 0, 1.0, 2.0, "  "))
    cues = list(
        srt.parse(
            render(Transcript("transcribe", "en", 2.0, segments), parse(response_format="srt"))
        )
    )
    assert len(cues) == 1 and cues[0].end > cues[0].start


def test_verbose_json_has_the_granularities_asked_for() -> None:
    segments_only = json.loads(render(TRANSCRIPT, parse(response_format="verbose_json")))
    assert segments_only["task"] == "transcribe" and segments_only["language"] == "en"
    assert segments_only["duration"] == 3662.0
    assert [s["text"] for s in segments_only["segments"]] == [
        " Hello there.",
        " General --> Kenobi.",
    ]
    assert "words" not in segments_only
    words_only = json.loads(
        render(
            TRANSCRIPT,
            parse(response_format="verbose_json", **{"timestamp_granularities[]": "word"}),
        )
    )
    assert "segments" not in words_only
    assert [w["word"] for w in words_only["words"]] == ["Hello", "there.", "General"]


def test_nothing_heard_is_an_empty_text() -> None:
    silent = Transcript("transcribe", None, 5.0)
    assert json.loads(render(silent, parse()))["text"] == ""
    assert render(silent, parse(response_format="srt")) == ""
    assert render(silent, parse(response_format="vtt")) == "WEBVTT\n\n"


# --------------------------------------------------------------------------- streaming


def events(chunks: list[bytes | None]) -> list[dict[str, object]]:
    out = []
    for chunk in chunks:
        if chunk is not None:
            text = chunk.decode()
            assert text.startswith("data: ") and text.endswith("\n\n")
            out.append(json.loads(text[6:]))
    return out


def test_deltas_join_to_the_answers_text() -> None:
    deltas = Deltas()
    chunks = [deltas.delta(s.text) for s in (*SEGMENTS, Segment(2, 0, 5, 6, "  "))]
    chunks.append(deltas.done(TRANSCRIPT))
    sent = events(chunks)
    assert [e["type"] for e in sent] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    joined = "".join(str(e["delta"]) for e in sent[:-1])
    assert joined == sent[-1]["text"] == TRANSCRIPT.text


def test_the_error_body_is_openais() -> None:
    error = OpenAIError(413, "too big", param="file", code="request_too_large")
    assert error.body() == {
        "error": {
            "message": "too big",
            "type": "invalid_request_error",
            "param": "file",
            "code": "request_too_large",
        }
    }
    assert OpenAIError(503, "busy").body()["error"]["type"] == "server_error"


def test_a_clip_error_gets_its_status() -> None:
    from whisperwire import protocol as proto
    from whisperwire.clips import ClipError
    from whisperwire.openai_api import clip_error

    not_audio = clip_error(ClipError(proto.AUDIO_DECODE_ERROR, "not audio"))
    assert (not_audio.status, not_audio.param) == (400, "file")
    too_long = clip_error(ClipError(proto.MESSAGE_TOO_BIG, "longer than 7200 s"))
    assert (too_long.status, too_long.param) == (413, "file")
    busy = clip_error(ClipError(proto.OVERLOADED, "memory"))
    assert busy.status == 503 and busy.retry_after
    assert clip_error(ClipError(proto.INTERNAL_ERROR, "incident 1")).status == 500
