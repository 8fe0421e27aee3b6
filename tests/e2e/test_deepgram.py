"""The Deepgram live API at /v1/listen, through Deepgram's official Python SDK pointed at a
real server (bundled model), beside the same audio through the native protocol."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from support import (
    Server,
    audio_root,
    librispeech_clips,
    load_audio,
    pcm,
    start_server,
    stream,
    wer,
)

deepgram_sdk = pytest.importorskip("deepgram")
from deepgram import DeepgramClient  # noqa: E402
from deepgram.core.events import EventType  # noqa: E402
from deepgram.environment import DeepgramClientEnvironment  # noqa: E402

KEY = "dg-test-key"
PAUSE_S = 1.5  # silence after each clip: a pause the server's VAD ends a region at
FRAME_S = 0.1
LIVE = {  # what a typical live client asks for
    "model": "nova-3",
    "encoding": "linear16",
    "sample_rate": 16000,
    "channels": 1,
    "interim_results": True,
    "endpointing": 300,
    "utterance_end_ms": 1000,
    "vad_events": True,
    "language": "en-US",
    "punctuate": True,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with an API key (the SDK sends it as `Authorization: Token KEY`) whose finals
    do not depend on timing: with a commit guard longer than any clip, a region's words become
    final only at its end, in one decode of the whole region. Two streams of the same audio then
    get the same finals however their decodes fall, and the Deepgram stream's text can be held
    to the native one's; run to run, default streaming differs by a few words (0.06 against
    0.095 WER for the same five clips, twice through the native protocol on this machine).
    `--no-fallback` too: a window that fails Whisper's checks is otherwise decoded again by
    sampling at a higher temperature, which gave the same audio 0.083 and 0.048 WER in two
    streams, one after the other."""
    audio_root()
    flags = ("--max-lag", "60", "--api-key", KEY, "--commit-guard", "10", "--no-fallback")
    srv = start_server(tmp_path_factory.mktemp("server"), *flags)
    yield srv
    srv.stop()


def client(server: Server, key: str = KEY) -> DeepgramClient:
    here = f"127.0.0.1:{server.port}"
    environment = DeepgramClientEnvironment(
        base=f"http://{here}", production=f"ws://{here}", agent=f"ws://{here}", agent_rest=""
    )
    return DeepgramClient(api_key=key, environment=environment)


def as_dict(message: Any) -> dict[str, Any]:
    return message if isinstance(message, dict) else message.dict()


@contextmanager
def listening(server: Server, **options: Any) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """An SDK live connection and the messages it has received (a listener thread's)."""
    received: list[dict[str, Any]] = []
    with client(server).listen.v1.connect(**{**LIVE, **options}) as connection:
        connection.on(EventType.MESSAGE, lambda m: received.append(as_dict(m)))
        listener = threading.Thread(target=connection.start_listening, daemon=True)
        listener.start()
        yield connection, received
        listener.join(300)
        assert not listener.is_alive(), "the server did not close the stream"


def send_realtime(connection: Any, samples: np.ndarray) -> None:
    frame = int(16000 * FRAME_S)
    started = time.monotonic()
    for i, start in enumerate(range(0, len(samples), frame)):
        delay = started + i * FRAME_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        connection.send_media(pcm(samples[start : start + frame]))


def results(received: list[dict[str, Any]], final: bool) -> list[dict[str, Any]]:
    return [m for m in received if m["type"] == "Results" and m["is_final"] is final]


def transcript(message: dict[str, Any]) -> str:
    return str(message["channel"]["alternatives"][0]["transcript"])


def test_sdk_streams_clips_in_real_time_as_the_native_protocol_does(server: Server) -> None:
    chosen = [
        (path, ref)
        for path, ref in librispeech_clips(12)
        if 4.0 <= len(load_audio(path)) / 16000 <= 10.0
    ][:5]
    assert len(chosen) == 5
    pause = np.zeros(int(PAUSE_S * 16000), np.float32)
    pieces, clip_ends, at = [], [], 0.0
    for path, _ in chosen:
        samples = load_audio(path)
        at += len(samples) / 16000
        clip_ends.append(at)
        at += PAUSE_S
        pieces += [samples, pause]
    audio = np.concatenate(pieces)
    reference = " ".join(ref for _, ref in chosen)

    with listening(server) as (connection, received):
        send_realtime(connection, audio)
        connection.send_close_stream()
    # The same audio through the native protocol, paced alike (after it: not competing).
    native = stream(server.url, audio, realtime=True, query=f"token={KEY}").text

    interim, finals = results(received, False), results(received, True)
    assert interim and finals
    assert all(m["channel_index"] == [0, 1] and m["metadata"]["request_id"] for m in finals)
    words = [w for m in interim + finals for w in m["channel"]["alternatives"][0]["words"]]
    assert any(m["channel"]["alternatives"][0]["words"] for m in interim)
    assert words and all(
        set(w) >= {"word", "start", "end", "confidence", "punctuated_word"} for w in words
    )
    # Each clip's speech ends at a pause: a final there (an empty one, if the region's words
    # were all final already) says speech_final.
    speech_finals = [m["start"] + m["duration"] for m in finals if m["speech_final"]]
    for start, end in zip([0.0, *clip_ends], clip_ends, strict=False):
        assert any(max(start, end - 2.0) <= e <= end + 1.0 for e in speech_finals), (
            end,
            speech_finals,
        )
    kinds = [m["type"] for m in received]
    assert kinds.count("SpeechStarted") >= len(chosen)
    assert kinds.count("UtteranceEnd") >= len(chosen)
    assert kinds[-1] == "Metadata" and kinds.count("Metadata") == 1
    assert received[-1]["duration"] == pytest.approx(len(audio) / 16000, abs=0.01)

    text = " ".join(transcript(m) for m in finals)
    deepgram_wer, native_wer = wer([reference], [text]), wer([reference], [native])
    print(f"WER through the Deepgram SDK {deepgram_wer:.4f}, native {native_wer:.4f}")
    assert abs(deepgram_wer - native_wer) <= 0.02


def test_finalize_gives_results_from_finalize_and_close_stream_metadata(server: Server) -> None:
    path, _ = librispeech_clips(1)[0]
    samples = load_audio(path)[: 16000 * 4]  # cut mid-sentence: a region still open
    with listening(server, interim_results=False) as (connection, received):
        send_realtime(connection, samples)
        connection.send_keep_alive()
        connection.send_finalize()
        deadline = time.monotonic() + 120
        while not any(m.get("from_finalize") for m in received) and time.monotonic() < deadline:
            time.sleep(0.05)
        connection.send_close_stream()
    assert not results(received, False)  # interim_results=false: finals only
    finalized = [m for m in received if m.get("from_finalize")]
    assert len(finalized) == 1 and finalized[0]["is_final"]
    assert finalized[0] is [m for m in received if m["type"] == "Results"][-1]
    assert " ".join(transcript(m) for m in results(received, True)).strip()
    assert [m["type"] for m in received][-1] == "Metadata"
    assert not [m for m in received if m["type"] == "Error"]


@pytest.mark.parametrize(
    ("query", "variant", "says"),
    [
        ("encoding=opus&sample_rate=48000", "UNSUPPORTED_FORMAT", "encoding=linear16"),
        ("encoding=linear16&sample_rate=16000&channels=2", "UNSUPPORTED_FORMAT", "channels=1"),
        ("encoding=linear16&sample_rate=2", "INVALID_MESSAGE", "sample_rate"),
    ],
)
def test_an_unsupported_query_is_an_error_then_close_1008(
    server: Server, query: str, variant: str, says: str
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{server.port}/v1/listen?{query}"
    with connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        error = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert error["type"] == "Error" and error["variant"] == variant
    assert says in error["description"]
    assert ws.close_code == 1008


@pytest.mark.parametrize(
    ("headers", "query", "works"),
    [
        ({"Authorization": f"Bearer {KEY}"}, "", True),
        ({}, f"&token={KEY}", True),
        ({"Authorization": "Token wrong"}, "", False),
        ({}, "", False),
    ],
)
def test_the_key_as_bearer_or_token_parameter_too(
    server: Server, headers: dict[str, str], query: str, works: bool
) -> None:
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000{query}"
    with connect(url, additional_headers=headers) as ws:
        if works:  # nothing is said before the stream closes
            ws.send(json.dumps({"type": "CloseStream"}))
        first = json.loads(ws.recv(timeout=30))
    if works:
        assert first["type"] == "Metadata" and first["duration"] == 0.0
    else:
        assert (first["type"], first["variant"]) == ("Error", "UNAUTHORIZED")
        assert ws.close_code == 1008


@pytest.mark.parametrize(
    "query", ["", "?sample_rate=16000&encoding=s16le&partials=false", "?format=json&language=en"]
)
def test_a_native_client_at_v1_listen_still_speaks_the_native_protocol(
    server: Server, query: str
) -> None:
    """The contract keeps `/v1/listen` the native endpoint's second path: a client that sends
    no Deepgram parameter and no `Token` key gets the whisperwire protocol there."""
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{server.port}/v1/listen{query}"
    with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ready = json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({"type": "end"}))
        end = json.loads(ws.recv(timeout=30))
    assert (ready["type"], ready["state"]) == ("state", "ready") and ready["session_id"]
    assert end["type"] == "end" and end["duration"] == 0.0
