"""The OpenAI-compatible audio API end to end: the official `openai` client (only its base_url
and api_key changed) against a real server on the bundled model, on real speech."""

from __future__ import annotations

import contextlib
import io
import threading
import time
import warnings
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import srt
import webvtt
from support import (
    Server,
    audio_root,
    librispeech_clips,
    live_stream,
    load_audio,
    offline_transcripts,
    start_server,
    transcripts,
    wer,
)

KEY = "sk-test-key"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    audio_root()
    srv = start_server(tmp_path_factory.mktemp("openai"), "--api-key", KEY, "--max-lag", "60")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)


@pytest.fixture(scope="module")
def clips() -> list[tuple[Path, str]]:
    """jfk.flac and three LibriSpeech test-other clips, with their references."""
    jfk = audio_root() / "jfk" / "jfk.flac"
    return [(jfk, transcripts("jfk")["jfk.flac"]), *librispeech_clips(3)]


@pytest.fixture(scope="module")
def offline(clips: list[tuple[Path, str]]) -> list[str]:
    return offline_transcripts([path for path, _ in clips])


def text_of(answer: Any, response_format: str) -> str:
    """The transcript's text as a user reads it out of each format, SRT and WebVTT parsed by
    real parsers."""
    if response_format in ("json", "verbose_json"):
        return answer.text
    assert isinstance(answer, str)
    if response_format == "text":
        return answer
    if response_format == "srt":
        return " ".join(cue.content for cue in srt.parse(answer))
    return " ".join(cue.text for cue in webvtt.from_buffer(io.StringIO(answer)))


@pytest.mark.parametrize("response_format", FORMATS)
def test_each_format_transcribes_as_offline_faster_whisper_does(
    client: openai.OpenAI,
    clips: list[tuple[Path, str]],
    offline: list[str],
    response_format: str,
) -> None:
    for (path, reference), expected in zip(clips, offline, strict=True):
        with path.open("rb") as f:
            answer = client.audio.transcriptions.create(
                model="whisper-1", file=f, response_format=response_format
            )
        text = text_of(answer, response_format)
        assert text.strip(), path.name
        ours, theirs = wer([reference], [text]), wer([reference], [expected])
        assert abs(ours - theirs) <= 0.02, (path.name, text, expected)


def test_srt_and_vtt_cues_are_in_order_within_the_clip(
    client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    path = clips[1][0]
    duration = len(load_audio(path)) / 16000
    with path.open("rb") as f:
        subtitles = client.audio.transcriptions.create(model="x", file=f, response_format="srt")
    cues = list(srt.parse(subtitles))
    assert cues and [c.index for c in cues] == list(range(1, len(cues) + 1))
    for a, b in pairwise(cues):
        assert a.start <= b.start
    assert all(c.start < c.end and c.end.total_seconds() <= duration + 0.5 for c in cues)
    with path.open("rb") as f:
        captions = client.audio.transcriptions.create(model="x", file=f, response_format="vtt")
    assert captions.startswith("WEBVTT")
    vtt_cues = list(webvtt.from_buffer(io.StringIO(captions)))

    def stamp(t: Any) -> str:
        return srt.timedelta_to_srt_timestamp(t).replace(",", ".")

    assert [(c.start, c.end, c.text) for c in vtt_cues] == [
        (stamp(c.start), stamp(c.end), c.content) for c in cues
    ]


def test_verbose_json_word_timestamps_are_monotone_within_the_clip(
    client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    for path, reference in clips[:2]:
        duration = len(load_audio(path)) / 16000
        with path.open("rb") as f:
            answer = client.audio.transcriptions.create(
                model="whisper-1",
                file=f,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
        assert answer.language == "en"
        assert answer.duration == pytest.approx(duration, abs=0.01)
        words = answer.words or []
        assert len(words) >= len(reference.split()) // 2, answer.text
        assert " ".join(w.word for w in words).split() == answer.text.split()
        for w in words:
            assert 0 <= w.start <= w.end <= duration, w
        for a, b in pairwise(words):
            assert a.end <= b.start + 1e-6, (a, b)
        segments = answer.segments or []
        assert segments and "".join(s.text for s in segments).strip() == answer.text
        for a, b in pairwise(segments):
            assert a.end <= b.start + 1e-6


def test_verbose_json_without_word_granularity_has_no_words(
    client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    with clips[0][0].open("rb") as f:
        answer = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json"
        )
    assert answer.segments and not answer.words
    assert answer.task == "transcribe"


def test_a_stream_of_deltas_joins_to_the_same_text(
    client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    path = clips[1][0]
    with path.open("rb") as f:
        whole = client.audio.transcriptions.create(model="whisper-1", file=f)
    with path.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 1 and events[-1].type == "transcript.text.done"
    assert "".join(deltas) == events[-1].text == whole.text


def test_translations_on_an_english_only_model_transcribe(
    client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    """As the WebSocket protocol's `task: translate` does on a .en model: the audio is
    English already, and the model can only write English."""
    path, reference = clips[0]
    with path.open("rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's, on translations
        answer = client.audio.translations.create(model="whisper-1", file=f)
    assert wer([reference], [answer.text]) <= 0.1, answer.text


def test_the_served_model_is_listed(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny.en"]
    assert client.models.retrieve("tiny.en").id == "tiny.en"


def test_an_upload_is_decoded_through_the_scheduler(
    server: Server, client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    def clip_jobs() -> float:
        page = httpx.get(
            f"http://127.0.0.1:{server.port}/metrics",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        ).text
        line = next(
            x
            for x in page.splitlines()
            if x.startswith('whisperwire_decode_jobs_total{kind="clip"}')
        )
        return float(line.split()[-1])

    before = clip_jobs()
    with clips[0][0].open("rb") as f:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert clip_jobs() > before


def test_a_long_upload_does_not_stall_a_live_streams_partials(
    server: Server, client: openai.OpenAI
) -> None:
    """A 231 s upload streamed back while a live stream runs: the live stream's partials keep
    arriving between the upload's first delta and its end (the fair scheduler's turns)."""
    long = audio_root() / "longform" / "ljspeech_LJ001-0001_to_0032.flac"
    live = load_audio(audio_root() / "longform" / "ls_test_other_1688-142285_0000-0009.flac")
    arrivals: list[tuple[float, dict[str, Any]]] = []
    url = f"{server.url}?token={KEY}"
    streamer = threading.Thread(target=live_stream, args=(url, live[: 16000 * 40], arrivals))
    streamer.start()
    try:
        while not any(m["type"] == "partial" for _, m in arrivals) and streamer.is_alive():
            time.sleep(0.1)
        deltas: list[float] = []
        with long.open("rb") as f:
            for e in client.audio.transcriptions.create(model="whisper-1", file=f, stream=True):
                if e.type == "transcript.text.delta":
                    deltas.append(time.monotonic())
                else:
                    done, text = time.monotonic(), e.text
    finally:
        streamer.join()
    assert len(deltas) >= 8 and len(text.split()) > 300  # 231 s of speech, many segments
    during = [t for t, m in arrivals if m["type"] == "partial" and deltas[0] < t < done]
    print(f"{len(during)} live partials during the upload's {len(deltas)} deltas")
    assert len(during) >= 3, (len(during), len(deltas))
    assert arrivals[-1][1]["type"] == "end"


# --------------------------------------------------------------------------- errors


def test_a_file_that_is_not_audio_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="whisper-1", file=("notes.txt", b"these are not the sounds you are after")
        )
    error = caught.value
    assert error.status_code == 400
    assert isinstance(error.body, dict) and error.body["param"] == "file"
    assert error.body["type"] == "invalid_request_error" and error.body["message"]


def test_a_bad_parameter_is_a_bad_request_naming_it(
    client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    data = clips[0][0].read_bytes()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"response_format": "xml"}, "response_format"),
        ({"language": "xx"}, "language"),
        ({"temperature": 3.0}, "temperature"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities[]"),
    ]
    for options, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.transcriptions.create(
                model="whisper-1", file=("jfk.flac", data), **options
            )
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param, options


def test_a_wrong_key_is_refused(server: Server, clips: list[tuple[Path, str]]) -> None:
    stranger = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key="sk-wrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError), clips[0][0].open("rb") as f:
        stranger.audio.transcriptions.create(model="whisper-1", file=f)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


@contextlib.contextmanager
def own_server(tmp: Path, *args: str) -> Iterator[openai.OpenAI]:
    """A client (no retries) of a server of its own, started with `args` and no key."""
    srv = start_server(tmp, *args)
    try:
        yield openai.OpenAI(
            base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="anything", max_retries=0
        )
    finally:
        srv.stop()


def refused(client: openai.OpenAI, path: Path, kind: type[Exception]) -> Any:
    """The SDK's exception (of `kind`) for an upload of `path`."""
    with pytest.raises(kind) as caught, path.open("rb") as f:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    error = caught.value
    assert isinstance(error, openai.APIStatusError) and isinstance(error.body, dict)
    return error


def test_an_upload_over_max_message_mb_is_413(
    tmp_path_factory: pytest.TempPathFactory, clips: list[tuple[Path, str]]
) -> None:
    """jfk.flac is 1.1 MiB; a test-other clip is well under 1."""
    with own_server(tmp_path_factory.mktemp("small"), "--max-message-mb", "1") as client:
        error = refused(client, clips[0][0], openai.APIStatusError)
        with clips[1][0].open("rb") as f:
            assert client.audio.transcriptions.create(model="whisper-1", file=f).text
    assert error.status_code == 413 and error.body["param"] == "file"
    assert "--max-message-mb" in error.body["message"]


def test_a_wrong_method_or_path_under_v1_has_openais_error_body(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    wrong_method = httpx.get(f"{base}/v1/audio/transcriptions", headers=headers, timeout=30)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    missing = httpx.post(f"{base}/v1/audio/speech", headers=headers, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    assert httpx.get(f"{base}/nowhere", timeout=30).json() == {"detail": "Not Found"}


def test_at_the_memory_budget_an_upload_is_503_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory, clips: list[tuple[Path, str]]
) -> None:
    """A budget of 50 MB is below what the loaded model alone takes: always over it."""
    with own_server(tmp_path_factory.mktemp("tight"), "--max-memory-mb", "50") as client:
        error = refused(client, clips[1][0], openai.InternalServerError)
    assert error.status_code == 503 and int(error.response.headers["retry-after"]) > 0
    assert error.body["code"] == "overloaded" and "--max-memory-mb" in error.body["message"]


def test_metrics_count_the_api_requests_by_route_and_status(
    server: Server, client: openai.OpenAI, clips: list[tuple[Path, str]]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def counts() -> dict[tuple[str, str], float]:
        reply = httpx.get(
            f"http://127.0.0.1:{server.port}/metrics",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        assert reply.status_code == 200
        return {
            (sample.labels["route"], sample.labels["status"]): sample.value
            for family in text_string_to_metric_families(reply.text)
            for sample in family.samples
            if sample.name == "whisperwire_api_requests_total"
        }

    before = counts()
    path, _ = clips[0]
    with path.open("rb") as audio:
        client.audio.transcriptions.create(model="whisper-1", file=audio)
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"not audio"))
    client.models.list()
    after = counts()
    for key, moved in [(("transcriptions", "200"), 1), (("transcriptions", "400"), 1),
                       (("models", "200"), 1)]:  # fmt: skip
        assert after.get(key, 0) - before.get(key, 0) == moved, (key, before, after)
