"""OpenAI's Realtime transcription API at /v1/realtime, against a real server (bundled model).

The streaming test uses the official `openai` package's Realtime client: its
`websocket_base_url` points it at this server (`ws://127.0.0.1:PORT/v1`, to which it adds
`/realtime`), and it sends the key as `Authorization: Bearer KEY`. The tests of single events
(manual commits, clear, bad events, keys) use a raw `websockets` client that sends exactly
the JSON OpenAI's documentation shows, so that a malformed event reaches the server as sent.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import Server, audio_root, load_audio, pcm, start_server, stream, transcripts, wer

openai = pytest.importorskip("openai")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

KEY = "sk-realtime-test"
RATE = 24000
APPEND_S = 0.1
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
MANUAL = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with an API key; `--no-fallback` (temperature 0 only) so that the same audio
    gives the same words run after run (see test_deepgram's server)."""
    audio_root()
    flags = ("--max-lag", "60", "--api-key", KEY, "--no-fallback")
    srv = start_server(tmp_path_factory.mktemp("realtime"), *flags)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def jfk() -> tuple[np.ndarray, str]:
    """jfk.flac at 24 kHz (OpenAI's PCM rate) and its reference text."""
    path = audio_root() / "jfk" / "jfk.flac"
    return load_audio(path, sample_rate=RATE), transcripts("jfk")["jfk.flac"]


def b64(samples: np.ndarray) -> str:
    return base64.b64encode(pcm(samples)).decode()


def raw(server: Server, key: str = KEY, query: str = "intent=transcription") -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?{query}"
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"})


def events_until(ws: ClientConnection, kind: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Events received up to and including the first of `kind`."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not out or out[-1]["type"] != kind:
        out.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
    return out


def append_all(ws: ClientConnection, samples: np.ndarray) -> None:
    step = int(RATE * APPEND_S)
    for start in range(0, len(samples), step):
        event = {"type": "input_audio_buffer.append", "audio": b64(samples[start : start + step])}
        ws.send(json.dumps(event))


def check_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each item's deltas concatenate to its `completed` transcript, and each item is
    committed before it is completed, after the item before it. Returns the completions."""
    assert all(e.get("event_id") for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    completions = [e for e in events if e["type"] == COMPLETED]
    commits = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert [c["item_id"] for c in commits] == [c["item_id"] for c in completions]
    assert [c["previous_item_id"] for c in commits[1:]] == [c["item_id"] for c in commits[:-1]]
    for done in completions:
        deltas = [
            e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == done["item_id"]
        ]
        assert "".join(deltas) == done["transcript"]
    return completions


@pytest.mark.parametrize("silence_ms", [500, 1000])  # OpenAI's default; fewer, longer turns
def test_the_openai_sdk_streams_jfk_in_real_time_with_server_vad(
    server: Server, jfk: tuple[np.ndarray, str], silence_ms: int
) -> None:
    """The native protocol's WER on the same audio is printed beside it: a turn is a region
    of the same VAD, decoded by the same policy (the server's pause is 500 ms too)."""
    samples, reference = jfk
    audio = np.concatenate([samples, np.zeros(int(1.5 * RATE), np.float32)])  # a final pause
    client = openai.OpenAI(
        api_key=KEY,
        base_url=f"http://127.0.0.1:{server.port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
    )
    received: list[Any] = []
    step = int(RATE * APPEND_S)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:

        def listen() -> None:
            for event in connection:
                received.append(event)
                if event.type == "error":
                    return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.5,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": silence_ms,
                        },
                    }
                },
            }
        )
        started = time.monotonic()
        for i, start in enumerate(range(0, len(audio), step)):  # real time: 100 ms appends
            delay = started + i * APPEND_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            connection.input_audio_buffer.append(audio=b64(audio[start : start + step]))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every turn that started is completed
            kinds = [e.type for e in received]
            begun = kinds.count("input_audio_buffer.speech_started")
            if begun and kinds.count(COMPLETED) == begun:
                break
            time.sleep(0.1)
    events = [e.to_dict() for e in received]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert "error" not in kinds
    updated = events[1]["session"]["audio"]["input"]
    assert updated["turn_detection"]["silence_duration_ms"] == silence_ms
    completions = check_items(events)
    assert completions and all(c["usage"]["type"] == "duration" for c in completions)
    for kind, field in (("speech_started", "audio_start_ms"), ("speech_stopped", "audio_end_ms")):
        marks = [e for e in events if e["type"] == f"input_audio_buffer.{kind}"]
        assert len(marks) == len(completions)
        assert [m["item_id"] for m in marks] == [c["item_id"] for c in completions]
        assert all(0 <= m[field] <= len(audio) * 1000 / RATE for m in marks)
    text = " ".join(c["transcript"] for c in completions)
    # The same audio through the native protocol, at the same pace (after it: not competing).
    native = stream(server.url, samples, RATE, realtime=True, query=f"token={KEY}").text
    realtime_wer, native_wer = wer([reference], [text]), wer([reference], [native])
    print(f"\n{len(completions)} turns: {text!r}")
    print(f"WER through the OpenAI SDK {realtime_wer:.4f} ({silence_ms} ms pauses end a turn)")
    print(f"WER through the native protocol {native_wer:.4f} (the server's 500 ms)")
    assert realtime_wer <= 0.1


def test_manual_commit_gives_committed_then_completed(
    server: Server, jfk: tuple[np.ndarray, str]
) -> None:
    samples, _ = jfk
    with raw(server) as ws:
        ws.send(json.dumps({"type": "session.update", "session": MANUAL, "event_id": "c1"}))
        append_all(ws, samples[: int(3.5 * RATE)])
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = events_until(ws, COMPLETED)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert events[1]["session"]["audio"]["input"]["turn_detection"] is None
    assert not [k for k in kinds if "speech_" in k or k == "error"]
    assert kinds.index("input_audio_buffer.committed") < kinds.index(COMPLETED)
    (done,) = check_items(events)
    assert "fellow" in done["transcript"].lower()
    assert done["usage"]["seconds"] == pytest.approx(3.5, abs=0.01)


def test_clear_empties_the_buffer(server: Server, jfk: tuple[np.ndarray, str]) -> None:
    samples, _ = jfk
    with raw(server) as ws:
        ws.send(json.dumps({"type": "session.update", "session": MANUAL}))
        append_all(ws, samples[: int(3.5 * RATE)])  # "And so my fellow Americans"
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        cleared = events_until(ws, "input_audio_buffer.cleared")
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c2"}))
        empty = events_until(ws, "error")
        append_all(ws, samples[int(7.5 * RATE) :])  # "ask what you can do for your country"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        after = events_until(ws, COMPLETED)
    assert not [e for e in cleared if e["type"] in ("error", COMPLETED)]
    error = empty[-1]["error"]
    assert (error["event_id"], error["param"]) == ("c2", "input_audio_buffer")
    assert "empty" in error["message"]
    (done,) = check_items(after)
    assert "country" in done["transcript"].lower()
    assert "fellow" not in done["transcript"].lower()
    assert done["usage"]["seconds"] == pytest.approx(len(samples) / RATE - 7.5, abs=0.01)


@pytest.mark.parametrize(
    ("frame", "code", "says"),
    [
        ('{"type": "response.create", "event_id": "e1"}', "unknown_message_type", "accepts"),
        (
            '{"type": "input_audio_buffer.append", "audio": "not*base64", "event_id": "e1"}',
            "base64_decode_error",
            "base64",
        ),
        (
            '{"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"}',
            "bad_audio_frame",
            "3 bytes",
        ),
        ("{not json", "invalid_json", "JSON"),
    ],
)
def test_a_bad_event_is_an_error_and_the_session_goes_on(
    server: Server, frame: str, code: str, says: str, jfk: tuple[np.ndarray, str]
) -> None:
    samples, _ = jfk
    with raw(server) as ws:
        events_until(ws, "session.created")
        ws.send(frame)
        (error,) = events_until(ws, "error")
        ws.send(json.dumps({"type": "session.update", "session": MANUAL}))
        events_until(ws, "session.updated")
        append_all(ws, samples[: int(3.5 * RATE)])
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        (done,) = check_items(events_until(ws, COMPLETED))
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == code
    assert says in error["error"]["message"]
    if code != "invalid_json":
        assert error["error"]["event_id"] == "e1"
    assert "fellow" in done["transcript"].lower()


@pytest.mark.parametrize("key", ["sk-wrong", ""])
def test_a_wrong_key_is_refused(server: Server, key: str) -> None:
    with raw(server, key=key) as ws:
        refusal = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert refusal["type"] == "error" and refusal["error"]["code"] == "unauthorized"
    assert ws.close_code == 1008


def test_the_sdk_with_a_wrong_key_gets_the_error(server: Server) -> None:
    client = openai.OpenAI(
        api_key="sk-wrong", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1"
    )
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        event = connection.recv()
    assert event.type == "error" and event.error.code == "unauthorized"


def test_another_intent_is_refused(server: Server) -> None:
    with raw(server, query="model=gpt-realtime&intent=conversation") as ws:
        refusal = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert (
        refusal["error"]["code"] == "invalid_message" and "transcri" in refusal["error"]["message"]
    )
    assert ws.close_code == 1008
