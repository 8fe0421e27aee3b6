"""One session's load does not reach another (issue 12): a 180 s stream sent at 50x real time,
and a 1 MB FLAC that decodes to hours of silence, each beside a live stream. The live stream's
final-word lag stays within 2x of its lag alone (measured in the same run), the server's
memory within its budget, and the fast sender gets its whole transcript."""

from __future__ import annotations

import csv
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from support import (
    Server,
    audio_message,
    audio_root,
    flac_silence,
    load_audio,
    pcm,
    recv_json,
    replies,
    session,
    start_server,
    wer,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

# The server admits a clip only as long as its decoded audio fits the budget: 2 h at 16 kHz
# float32 with the working copies is 1.3 GiB, plus a 256 MiB reserve, beside a process of
# about 450 MB while a live stream runs two decodes at once. At 2000 MB the clip was refused
# (room for 117 min): the budget must leave room for the work the test sends.
BUDGET_MB = 2500
LIVE = ("ls_test_other_1688-142285_0000-0009.flac", 45.0)  # the live stream: file, seconds
FAST = ("ls_test_other_all100.flac", 180.0)  # the fast sender's audio, cut at an utterance
FAST_SPEED = 50.0
SILENCE_S = 7200  # the clip: 2 h of silence, well under 1 MB of FLAC


def longform(name: str, seconds: float) -> tuple[np.ndarray, str]:
    """The file's first utterances up to `seconds`, cut after the last whole one, and their
    reference text."""
    folder = audio_root() / "longform"
    with (folder / "segments.tsv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["file"] == name]
    kept = [r for r in rows if float(r["end_s"]) <= seconds]
    end = float(kept[-1]["end_s"]) + 0.3
    samples = load_audio(folder / name)[: int(end * 16000)]
    return samples, " ".join(r["transcript"] for r in kept)


def live_stream(url: str, samples: np.ndarray) -> tuple[list[float], str]:
    """Real-time PCM; the lag of every final word: when its `final` arrived, after the moment
    its last sample was sent."""
    lags: list[float] = []
    finals: list[str] = []
    with connect(url, max_size=None, open_timeout=30) as ws:
        recv_json(ws)
        started = time.monotonic()

        def send() -> None:
            for i, at in enumerate(range(0, len(samples), 1600)):
                time.sleep(max(0.0, started + i * 0.1 - time.monotonic()))
                ws.send(pcm(samples[at : at + 1600]))
            ws.send(json.dumps({"type": "end"}))

        sender = threading.Thread(target=send)
        sender.start()
        for raw in ws:
            message = json.loads(raw)
            now = time.monotonic() - started
            if message["type"] == "final":
                finals.append(message["text"])
                lags.extend(now - word["end"] for word in message["words"])
            elif message["type"] == "end":
                break
        sender.join()
    return lags, " ".join(finals)


def fast_stream(url: str, samples: np.ndarray, out: dict[str, Any]) -> None:
    """PCM frames at FAST_SPEED x real time, then `end`; every message back."""
    messages: list[dict[str, Any]] = []
    # No keepalive: its pings would wait behind the audio the server has not read yet, and the
    # client would close itself with 1011 (docs/protocol.md, OVERLOADED).
    with connect(url, max_size=None, open_timeout=30, ping_interval=None) as ws:
        recv_json(ws)
        started = time.monotonic()
        for i, at in enumerate(range(0, len(samples), 1600)):
            time.sleep(max(0.0, started + i * 0.1 / FAST_SPEED - time.monotonic()))
            ws.send(pcm(samples[at : at + 1600]))
        out["sent_s"] = time.monotonic() - started
        ws.send(json.dumps({"type": "end"}))
        try:
            for raw in ws:
                messages.append(json.loads(raw))
                if messages[-1]["type"] == "end":
                    break
        except ConnectionClosed as closed:
            out["closed"] = closed.rcvd.code if closed.rcvd is not None else None
    out["messages"] = messages


def silence_clip(url: str, out: dict[str, Any]) -> None:
    data = flac_silence(SILENCE_S)
    out["bytes"] = len(data)
    with session(url) as ws:
        recv_json(ws)
        ws.send(audio_message(data, "silence"))
        out["replies"] = replies(ws, "silence")


class PeakRss:
    """The server's resident memory from `/health`, sampled every 0.1 s."""

    def __init__(self, server: Server) -> None:
        self.url = f"http://127.0.0.1:{server.port}/health"
        self.peak = 0.0
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while self._running.is_set():
            with urllib.request.urlopen(self.url, timeout=10) as reply:
                self.peak = max(self.peak, json.load(reply)["memory"]["rss_mb"])
            time.sleep(0.1)

    def __enter__(self) -> PeakRss:
        self._running.set()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running.clear()
        self._thread.join()


def beside(work: Any, url: str, live: np.ndarray) -> tuple[list[float], str, dict[str, Any]]:
    """The live stream, with `work(url, out)` starting 2 s into it, in a thread (a stream that
    arrives while another sends at 50x could be refused by admission, rightly)."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: (time.sleep(2.0), work(url, out)))
    thread.start()
    lags, text = live_stream(url, live)
    thread.join(600)
    assert not thread.is_alive(), "the loading client did not finish"
    return lags, text, out


def test_a_fast_sender_and_a_silence_bomb_leave_a_live_stream_its_lag(tmp_path: Path) -> None:
    live, live_ref = longform(*LIVE)
    fast, fast_ref = longform(*FAST)
    server = start_server(tmp_path, "--max-memory-mb", str(BUDGET_MB), "--max-lag", "60")
    try:
        with PeakRss(server) as rss:
            alone, alone_text = live_stream(server.url, live)
            with_fast, fast_text, fast_out = beside(
                lambda url, out: fast_stream(url, fast, out), server.url, live
            )
            with_clip, clip_text, clip_out = beside(silence_clip, server.url, live)
    finally:
        server.stop()
    p50 = {k: statistics.median(v) for k, v in [("alone", alone), ("fast", with_fast),
                                                 ("clip", with_clip)]}  # fmt: skip
    p95 = {k: float(np.percentile(v, 95)) for k, v in [("alone", alone), ("fast", with_fast),
                                                        ("clip", with_clip)]}  # fmt: skip
    fast_finals = " ".join(m["text"] for m in fast_out["messages"] if m["type"] == "final")
    codes = [m.get("code") for m in fast_out["messages"] if m["type"] == "error"]
    print(
        f"live final-word lag p50/p95: alone {p50['alone']:.2f}/{p95['alone']:.2f} s, "
        f"beside {FAST[1]:.0f} s at {FAST_SPEED:g}x {p50['fast']:.2f}/{p95['fast']:.2f} s, "
        f"beside {SILENCE_S / 3600:g} h of silence ({clip_out['bytes']} B of FLAC) "
        f"{p50['clip']:.2f}/{p95['clip']:.2f} s; peak RSS {rss.peak:.0f} of {BUDGET_MB} MB; "
        f"fast sender: sent in {fast_out['sent_s']:.1f} s, errors {codes}, "
        f"WER {wer([fast_ref], [fast_finals]):.3f}"
    )
    assert clip_out["bytes"] < 1_000_000
    assert 0 < rss.peak < BUDGET_MB
    for text in (alone_text, fast_text, clip_text):
        assert wer([live_ref], [text]) <= 0.2, text
    assert p50["fast"] <= 2 * p50["alone"], p50
    assert p50["clip"] <= 2 * p50["alone"], p50
    # The fast sender is slowed (told once, OVERLOADED), never closed abnormally, and gets
    # its whole transcript; the silence gives no words.
    assert "closed" not in fast_out, fast_out.get("closed")
    assert set(codes) <= {"OVERLOADED"}, codes
    assert wer([fast_ref], [fast_finals]) <= 0.25, fast_finals
    clip_answer = clip_out["replies"][-2]
    assert clip_answer["type"] == "transcription" and clip_answer["transcription"] == ""
