"""The solo lane on the real model: with several 1-thread workers on a CPU, a second copy of
the weights on all their threads decodes for a session while it is alone. It must say what
the workers say, and a server that has it must transcribe one stream and two at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import httpx
import pytest
from support import (
    Server,
    librispeech_clips,
    load_audio,
    offline_transcripts,
    start_server,
    stream,
    wer,
)

from whisperwire.engine import Engine, EngineOptions, resolve_model
from whisperwire.policy import DecodeRequest

SEVERAL_CORES = (os.cpu_count() or 1) > 1


def final(audio: object) -> DecodeRequest:
    return DecodeRequest(0, audio, 0.0, "", "en", "transcribe", "final")  # type: ignore[arg-type]


def test_the_solo_lane_decodes_as_the_workers_do() -> None:
    engine = Engine(resolve_model(None), EngineOptions(workers=2, threads=1))
    assert engine.has_solo_lane and engine.solo_threads == 2
    clips = librispeech_clips(3)
    references = [text for _, text in clips]
    on_worker, in_lane = [], []
    for path, _ in clips:
        audio = load_audio(path)
        on_worker.append(" ".join(w.text for w in engine.decode(final(audio)).words))
        with engine.solo_lane():
            assert engine.in_solo_lane()
            in_lane.append(" ".join(w.text for w in engine.decode(final(audio)).words))
        assert not engine.in_solo_lane()
    # the same weights and window: only the threads differ, and with them the order of sums
    assert wer(on_worker, in_lane) <= 0.05, (on_worker, in_lane)
    assert wer(references, in_lane) <= wer(references, on_worker) + 0.05


@pytest.mark.parametrize(
    "options",
    [EngineOptions(workers=2, threads=1, solo_threads=1), EngineOptions(workers=1)],
    ids=["turned off", "one worker"],
)
def test_no_solo_lane_without_several_workers_or_when_turned_off(options: EngineOptions) -> None:
    engine = Engine(resolve_model(None), options)
    assert not engine.has_solo_lane
    with engine.solo_lane():
        assert not engine.in_solo_lane()  # the workers' model: there is no other


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("solo"))
    yield srv
    srv.stop()


def test_a_default_server_has_the_lane_and_transcribes_one_stream_and_two(server: Server) -> None:
    load = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).json()["load"]
    assert load["solo"] is SEVERAL_CORES, load
    clips = librispeech_clips(2)
    references = [text for _, text in clips]
    audio = [load_audio(path) for path, _ in clips]
    offline = offline_transcripts([path for path, _ in clips])
    # Streaming keeps within the bench's bound of offline decoding of the same clips, over
    # both (76 words: offline 9 errors, the bound 17). Clip by clip, the first one's bound
    # (32 words, offline 2 errors) allowed 4 errors, and on a 2-core AMD VM on a slow day
    # (2026-12-07) 3 of 8 runs streamed it with 5 ("grain of two", "here's" for "his"): its
    # words depend on when decodes start (a replay of the same code gives them unchanged).
    bound = 1.5 * wer(references, offline) + 0.05

    alone = [stream(server.url, samples, realtime=True) for samples in audio]  # one at a time
    assert not any(result.errors for result in alone), [result.errors for result in alone]
    texts = [result.text for result in alone]
    assert wer(references, texts) <= bound, (texts, offline)

    results: list[str] = ["", ""]

    def run(i: int) -> None:
        results[i] = stream(server.url, audio[i], realtime=True).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wer(references, results) <= bound, (results, offline)
