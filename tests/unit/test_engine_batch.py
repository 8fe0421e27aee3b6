"""The batched pipeline's one pass per window, against what the sequential decode would do:
`_PassRecorder` notes the windows whose pass stopped before their end (faster-whisper's own
segment splitting, fed token sequences as the model emits them)."""

from __future__ import annotations

from types import SimpleNamespace

from faster_whisper.transcribe import WhisperModel

from whisperwire.engine import _PassRecorder

EOT, TS = 50256, 50363  # tiny.en: end of text, <|0.00|>; a timestamp step is 0.02 s
WORDS = [314, 1842, 345]


def ts(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def recorder() -> _PassRecorder:
    model = SimpleNamespace(time_precision=0.02, input_stride=2)
    model._split_segments_by_timestamps = lambda *args: WhisperModel._split_segments_by_timestamps(
        model, *args
    )
    return _PassRecorder(model)


def split(model: _PassRecorder, tokens: list[int], offset: float, duration: float) -> None:
    tokenizer = SimpleNamespace(timestamp_begin=TS, eot=EOT)
    size = int(-(-duration // 1) * 100)
    model._split_segments_by_timestamps(
        tokenizer=tokenizer, tokens=tokens, time_offset=offset, segment_size=size,
        segment_duration=duration, seek=0,
    )  # fmt: skip


def test_a_pass_that_closed_its_segment_before_the_end_and_stopped_is_unfinished() -> None:
    model = recorder()
    split(model, [ts(0), *WORDS, ts(5.32), ts(5.32)], offset=4.0, duration=7.5)
    assert model.unfinished == [4.0]


def test_a_pass_that_left_a_segment_open_is_unfinished() -> None:
    model = recorder()
    split(model, [ts(0), *WORDS, ts(2.0), ts(2.0), *WORDS], offset=0.0, duration=7.5)
    assert model.unfinished == [0.0]


def test_a_pass_that_ended_its_last_segment_or_never_split_is_finished() -> None:
    model = recorder()
    split(model, [ts(0), *WORDS, ts(2.0), ts(2.0), *WORDS, ts(7.0)], offset=0.0, duration=7.5)
    split(model, [ts(0), *WORDS, ts(6.5)], offset=7.5, duration=7.5)
    split(model, [ts(0), *WORDS], offset=15.0, duration=3.0)
    assert model.unfinished == []


def test_everything_else_is_the_model_itself() -> None:
    model = recorder()
    assert model.time_precision == 0.02
