"""The policy's audio buffer: windows by absolute position, bounded copying per frame."""

from __future__ import annotations

import numpy as np
import pytest

from whisperwire.samplebuffer import SampleBuffer


def test_windows_are_read_by_absolute_position_after_discards_and_growth() -> None:
    buffer = SampleBuffer(capacity=8)
    signal = np.arange(10_000, dtype=np.float32)
    kept_from = 0
    for i in range(0, len(signal), 37):
        buffer.append(signal[i : i + 37])
        if i % 5 == 0:
            kept_from = max(0, buffer.stop - 500)
            buffer.discard_before(kept_from)
        assert buffer.start == kept_from and buffer.stop == min(i + 37, len(signal))
        np.testing.assert_array_equal(
            buffer.window(buffer.start, buffer.stop), signal[buffer.start : buffer.stop]
        )
    window = buffer.window(buffer.stop - 100, buffer.stop - 50)
    window[:] = -1  # a copy: the buffer is untouched
    np.testing.assert_array_equal(buffer.window(buffer.stop - 100, buffer.stop - 50),
                                  signal[buffer.stop - 100 : buffer.stop - 50])  # fmt: skip


def test_outside_the_kept_audio_is_an_error() -> None:
    buffer = SampleBuffer()
    buffer.append(np.ones(100, dtype=np.float32))
    buffer.discard_before(40)
    with pytest.raises(IndexError):
        buffer.window(30, 60)
    with pytest.raises(IndexError):
        buffer.window(50, 101)
    buffer.discard_before(10)  # never goes back
    assert buffer.start == 40 and len(buffer) == 60


def test_a_frame_copies_the_frame_not_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 ms frames into a 25 s window for 300 s: the samples moved to make room add up to
    less than the audio appended, where a whole-window concatenate per frame moves ~1.1e9."""
    buffer = SampleBuffer(capacity=1600)
    moved = []
    make_room = SampleBuffer._make_room

    def counting(self: SampleBuffer, n: int) -> None:
        moved.append(len(self))
        make_room(self, n)

    monkeypatch.setattr(SampleBuffer, "_make_room", counting)
    frame = np.ones(1600, dtype=np.float32)
    for _ in range(3000):
        buffer.append(frame)
        buffer.discard_before(buffer.stop - 25 * 16000)
    assert len(buffer) == 25 * 16000
    assert sum(moved) < 3000 * len(frame)
    assert len(moved) < 3000 // 100
