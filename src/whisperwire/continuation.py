"""Decode a window as the continuation of words already said in it.

A live window holds audio whose words are already committed (they can never change) and the
newest audio after them. Decoding the whole window freely makes Whisper say the committed
words again, differently at times, and spends most of the decode generating them. Here the
committed text is forced as the decoder's prefix: Whisper reads it in one step and generates
only what follows, conditioned on exactly what was said (the idea of SimulStreaming's forced
decoding, on faster-whisper's CTranslate2 model). Word times come from one alignment of the
prefix and the new tokens together over the window, as faster-whisper aligns a decode.

faster-whisper's own `prefix=` cannot serve: it aligns only the generated tokens, from the
window's start, so the new words' times would be wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whisperwire.words import Word

NO_SPEECH, LOW_LOGPROB = 0.6, -1.0  # faster-whisper's defaults: such a window is silence


def decode_continuing(
    model: Any,
    audio: np.ndarray,
    prefix: str,
    language: str,
    task: str,
    beam_size: int,
    temperatures: tuple[float, ...],
) -> tuple[list[Word], int] | None:
    """`audio` (at most 30 s, 16 kHz) decoded after the forced text `prefix`: all words with
    times relative to the window, and how many leading ones are the prefix's. None when the
    prefix is too long to force (more than half of Whisper's 448 tokens)."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import (
        TranscriptionOptions,
        get_suppressed_tokens,
        merge_punctuations,
    )

    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task=task, language=language
    )
    forced = tokenizer.encode(" " + prefix.strip())
    if not forced or len(forced) >= model.max_length // 2:
        return None
    features = model.feature_extractor(audio)
    frames = min(features.shape[-1] - 1, model.feature_extractor.nb_max_frames)
    encoder_output = model.encode(pad_or_trim(features[:, :frames]))
    options = TranscriptionOptions(
        beam_size=beam_size,
        best_of=5,
        patience=1.0,
        length_penalty=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        log_prob_threshold=LOW_LOGPROB,
        no_speech_threshold=NO_SPEECH,
        compression_ratio_threshold=2.4,
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=list(temperatures),
        initial_prompt=None,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=True,
        max_initial_timestamp=1.0,
        word_timestamps=True,
        prepend_punctuations="\"'“¿([{-",
        append_punctuations="\"'.。,，!！?？:：”)]}、",
        multilingual=False,
        max_new_tokens=None,
        clip_timestamps="0",
        hallucination_silence_threshold=None,
        hotwords=None,
    )
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps, *forced]
    result, avg_logprob, _, _ = model.generate_with_fallback(
        encoder_output, prompt, tokenizer, options
    )
    new = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    if new[: len(forced)] == forced:  # CTranslate2 returns the prefix with what follows it
        new = new[len(forced) :]
    if result.no_speech_prob > NO_SPEECH and avg_logprob < LOW_LOGPROB:
        new = []  # what faster-whisper skips as silence
    alignment = model.find_alignment(tokenizer, [forced + new], encoder_output, frames)
    timings = alignment[0] if alignment else []
    # Words that hold a forced token are the prefix's (its last word, continued by a new
    # token, stays as it was committed: nothing is said twice).
    said, count = 0, 0
    for timing in timings:
        if said < len(forced):
            count += 1
        said += len(timing["tokens"])
    merge_punctuations(timings, options.prepend_punctuations, options.append_punctuations)
    words: list[Word] = []
    forced_words = 0
    for index, timing in enumerate(timings):
        if not timing["word"]:  # merged into a neighbour
            continue
        if index < count:
            forced_words += 1
        start, end = round(float(timing["start"]), 2), round(float(timing["end"]), 2)
        words.append(Word(timing["word"], start, end, float(timing["probability"])))
    return words, forced_words
