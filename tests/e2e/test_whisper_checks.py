"""Whisper's own checks on a decode (text too repetitive, or too unlikely: what faster-whisper
decodes again at a higher temperature), on the real model: a greedy partial that falls into a
loop is marked as failing them, alone and in a batch, so the policy commits none of its words
(`words.checked_prefix`); the thorough decode of the same window passes them."""

from __future__ import annotations

import numpy as np
import pytest
from support import audio_root, load_audio

from whisperwire.bench.corpus import LONG_FILE, LONGFORM
from whisperwire.engine import Engine, EngineOptions, resolve_model
from whisperwire.policy import SAMPLE_RATE, DecodeRequest
from whisperwire.words import checked_prefix, without_loop

# A live window of the long-form file in which tiny.en, greedy, says "the balance of the"
# a dozen times over "marks of appearance of lips and mouth. In making a post-mortem
# examination, the elementary..." (found by a replay of the file).
LOOPING = (96.05, 102.80)
CLEAN = (134.70, 144.60)  # "The dose for an adult is 10 minim. ..."


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(resolve_model(None), EngineOptions(workers=1, batch=2))


@pytest.fixture(scope="module")
def long_file() -> np.ndarray:
    return load_audio(audio_root() / LONGFORM / LONG_FILE)


def request(audio: np.ndarray, span: tuple[float, float], kind: str) -> DecodeRequest:
    window = audio[int(span[0] * SAMPLE_RATE) : int(span[1] * SAMPLE_RATE)]
    return DecodeRequest(0, window, span[0], "", "en", "transcribe", kind)  # type: ignore[arg-type]


def said(words: list) -> str:
    return " ".join(w.text.strip() for w in words)


def test_a_greedy_loop_fails_the_checks_and_the_thorough_decode_passes(
    engine: Engine, long_file: np.ndarray
) -> None:
    greedy = engine.decode(request(long_file, LOOPING, "partial"))
    assert len(without_loop(greedy.words)) < len(greedy.words), said(greedy.words)
    assert greedy.failed and checked_prefix(greedy.words, greedy.failed) == 0
    thorough = engine.decode(request(long_file, LOOPING, "final"))
    assert not thorough.failed and "elementary" in said(thorough.words).lower()
    clean = engine.decode(request(long_file, CLEAN, "partial"))
    assert not clean.failed and "adult" in said(clean.words)


def test_a_batch_marks_only_the_window_that_failed(engine: Engine, long_file: np.ndarray) -> None:
    looping, clean = request(long_file, LOOPING, "partial"), request(long_file, CLEAN, "partial")
    batched = engine.decode_batch([looping, clean])
    assert batched[0].failed and checked_prefix(batched[0].words, batched[0].failed) == 0
    assert not batched[1].failed and "adult" in said(batched[1].words)
