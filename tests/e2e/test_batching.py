"""Batched partial decodes (one encode and one greedy generate over several sessions' windows)
on the real model: the batch gives each window the words its own decode gives, and a server
that batches transcribes concurrent streams as well as one that does not. On this CPU batching
saves nothing (it is off by default here); these tests hold the path correct for a GPU."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from support import (
    audio_root,
    concurrent_streams,
    librispeech_clips,
    load_audio,
    start_server,
    wer,
)

from whisperwire.engine import Engine, EngineOptions, resolve_model
from whisperwire.policy import SAMPLE_RATE, DecodeRequest


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(resolve_model(None), EngineOptions(workers=1, batch=4))


def partial(i: int, audio: np.ndarray) -> DecodeRequest:
    return DecodeRequest(i, audio, 0.0, "", "en", "transcribe", "partial")


def test_a_batch_gives_each_window_the_words_of_its_own_decode(engine: Engine) -> None:
    clips = librispeech_clips(6)[:3]
    lengths = (4.0, 7.5, 11.0)  # windows of different lengths, as sessions have
    pairs = zip(clips, lengths, strict=True)
    windows = [load_audio(path)[: int(s * SAMPLE_RATE)] for (path, _), s in pairs]
    windows.append(np.zeros(3 * SAMPLE_RATE, dtype=np.float32))  # a silent window
    requests = [partial(i, w) for i, w in enumerate(windows)]
    assert len({engine.batch_group(r) for r in requests}) == 1

    batched = engine.decode_batch(requests)
    alone = [engine.decode(r) for r in requests]

    assert len(batched) == len(requests)
    assert batched[-1].words == []  # silence stays silent inside a batch
    for request, together, single in zip(requests[:-1], batched, alone, strict=False):
        text = " ".join(w.text.strip() for w in together.words)
        reference = " ".join(w.text.strip() for w in single.words)
        assert text and wer([reference], [text]) <= 0.1, (reference, text)
        length = len(request.audio) / SAMPLE_RATE
        assert all(0 <= w.start <= w.end <= length + 0.05 for w in together.words)
        # The words are placed where the single decode places them, but for the first word:
        # the single decode stretches it back to the window's start (and may move its end,
        # the second word's start, by up to 0.64 s here).
        same = zip(together.words, single.words, strict=False)
        pairs = [(a, b) for a, b in same if a.text == b.text]
        assert len(pairs) >= len(single.words) - 2
        assert max(abs(a.end - b.end) for a, b in pairs[1:]) <= 0.1
        assert max(abs(a.start - b.start) for a, b in pairs[2:]) <= 0.1


# (clip, first sample, end sample) of windows batched together. A window that starts off
# Whisper's 10 ms frame (not a multiple of 160 samples into the batch) had its first segment
# start a few ms before it, and its words went to the window before ("a jam together. Then
# the Moses was afraid and said surely the thing is known."; found by random batches).
SEAMS = [
    [(5, 57882, 79349), (4, 1510, 68202)],
    [(2, 390, 133308), (8, 18430, 35862)],
    [(8, 2673, 23583), (3, 7343, 42906), (2, 6605, 49260), (4, 1889, 71391)],
]


@pytest.mark.parametrize("windows", SEAMS, ids=["2 windows", "a short last one", "4 windows"])
def test_every_word_stays_with_its_own_window(
    engine: Engine, windows: list[tuple[int, int, int]]
) -> None:
    clips = [load_audio(path) for path, _ in librispeech_clips(12)]
    requests = [partial(i, clips[clip][a:b]) for i, (clip, a, b) in enumerate(windows)]
    for request, together in zip(requests, engine.decode_batch(requests), strict=True):
        single = [w.text for w in engine.decode(request).words]
        assert [w.text for w in together.words] == single
        length = len(request.audio) / SAMPLE_RATE
        assert all(0 <= w.start <= w.end <= length for w in together.words), together.words


def test_only_greedy_partials_of_one_language_task_and_prompt_share_a_batch(
    engine: Engine,
) -> None:
    audio = np.zeros(SAMPLE_RATE, dtype=np.float32)
    base = partial(0, audio)
    assert engine.batch_group(base) == ("en", "transcribe", "")
    final = DecodeRequest(1, audio, 0.0, "", "en", "transcribe", "final")
    assert engine.batch_group(final) is None  # beam search and fallback: decoded alone
    prompted = DecodeRequest(2, audio, 0.0, "Hello.", "en", "transcribe", "partial")
    assert engine.batch_group(prompted) != engine.batch_group(base)
    with pytest.raises(ValueError, match="one batch group"):
        engine.decode_batch([base, prompted])


def test_a_batching_server_transcribes_concurrent_streams(tmp_path) -> None:  # noqa: ANN001
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio_root()
    server = start_server(tmp_path, "--batch", "4", "-w", "1", "--max-lag", "60")
    try:
        clips = [c for c in librispeech_clips(40)[12:] if len(c[1].split()) >= 12][:4]
        # Partials of two sessions share a batch only when both wait at once; on a loaded
        # CPU worker the policy asks few of them, so streams started at random moments may
        # never meet (a CI run saw none). Here the speech of all four starts together, 0.1 s
        # into each stream, and their first partials reach the worker within milliseconds.
        audios = []
        for path, _ in clips:
            audio = load_audio(path)
            onset = get_speech_timestamps(audio, VadOptions())[0]["start"]
            audios.append(audio[max(0, onset - SAMPLE_RATE // 10) :])
        hyps = [result.text for result in concurrent_streams(server.url, audios)]
        health = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).json()
    finally:
        server.stop()
    assert health["batching"]["max_batch"] == 4
    assert health["batching"]["batches_run"] > 0, health["batching"]
    refs = [ref for _, ref in clips]
    for i, hyp in enumerate(hyps):
        others = [wer([refs[j]], [hyp]) for j in range(len(clips)) if j != i]
        assert wer([refs[i]], [hyp]) < min(others), (i, hyp)  # each gets its own words
    assert wer(refs, hyps) <= 0.25, hyps
