"""A window decoded after a forced prefix of its committed words (`--forced-prefix`, off by
default), on the real model: Whisper says only what follows them, timed in the same window;
a server that forces them transcribes live speech as well."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from support import (
    audio_root,
    librispeech_clips,
    load_audio,
    start_server,
    stream,
    transcripts,
    wer,
)

from whisperwire.engine import Engine, EngineOptions, resolve_model
from whisperwire.policy import SAMPLE_RATE, DecodeRequest


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(resolve_model(None), EngineOptions(workers=1))


def request(audio: np.ndarray, prefix: str, kind: str = "partial") -> DecodeRequest:
    return DecodeRequest(0, audio, 0.0, "", "en", "transcribe", kind, prefix)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["partial", "final"])
def test_only_the_words_after_the_prefix_are_decoded(engine: Engine, kind: str) -> None:
    reference = transcripts("jfk")["jfk.flac"]
    audio = load_audio(audio_root() / "jfk" / "jfk.flac")
    free = engine.decode(request(audio, "", kind))
    assert free.forced == 0
    prefix = " ".join(w.text.strip() for w in free.words[:5])  # "And so my fellow Americans"

    continued = engine.decode(request(audio, prefix, kind))

    assert continued.forced == 5
    said = [w.text.strip() for w in continued.words]
    assert " ".join(said[:5]).rstrip(",") == prefix.rstrip(",")
    assert wer([reference], [" ".join(said)]) <= 0.1, said
    new = continued.words[5:]
    assert len(new) >= 15
    length = len(audio) / SAMPLE_RATE
    assert all(0 <= a.start <= a.end <= b.start + 0.01 for a, b in pairwise(new))
    assert new[0].start >= continued.words[4].end - 0.05 and new[-1].end <= length + 0.05


def test_a_prefix_of_silence_adds_nothing_and_one_too_long_is_not_forced(
    engine: Engine,
) -> None:
    silence = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
    quiet = engine.decode(request(silence, "And so my fellow Americans"))
    assert quiet.forced == len(quiet.words) == 5  # nothing after the prefix

    (path, reference), *_ = librispeech_clips(1)
    audio = load_audio(path)
    too_long = " ".join(["word"] * 300)  # past half of Whisper's 448 tokens: decoded freely
    free = engine.decode(request(audio, too_long))
    assert free.forced == 0
    assert wer([reference], [" ".join(w.text for w in free.words)]) <= 0.35


def test_a_server_that_forces_the_committed_words_transcribes_live_speech(tmp_path) -> None:
    clips = librispeech_clips(4)
    audio = np.concatenate(
        [np.concatenate([load_audio(p), np.zeros(int(0.3 * SAMPLE_RATE), np.float32)])
         for p, _ in clips]
    )  # fmt: skip
    references = " ".join(r for _, r in clips)
    server = start_server(tmp_path, "--forced-prefix")
    try:
        result = stream(server.url, audio, realtime=True, speed=1.0)
    finally:
        server.stop()
    assert not result.errors
    assert wer([references], [result.text]) <= 0.2, result.text
