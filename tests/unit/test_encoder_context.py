"""The encoder's input cut to a window's audio and some padding (encoder_context): where the
padding starts, how much is kept, batches, and the 30 s Whisper never goes past."""

from __future__ import annotations

import numpy as np
import pytest

from whisperwire.encoder_context import (
    WHISPER_FRAMES,
    audio_frames,
    context_frames,
    trimmed,
)


def padded(frames: int, batch: int | None = None) -> np.ndarray:
    """Log-mel frames of audio (never all zero) padded with zeros to 3000, as pad_or_trim does."""
    rng = np.random.default_rng(frames)
    shape = (80, WHISPER_FRAMES) if batch is None else (batch, 80, WHISPER_FRAMES)
    features = np.zeros(shape, dtype=np.float32)
    features[..., :frames] = rng.uniform(-1.5, 1.5, shape[:-1] + (frames,))
    return features


def test_the_padding_starts_after_the_last_frame_of_audio() -> None:
    features = padded(731)
    features[:, 700] = 0.0  # a zero column inside the audio is not its end
    assert audio_frames(features) == 731
    assert audio_frames(np.zeros((80, WHISPER_FRAMES), dtype=np.float32)) == 0


def test_a_digitally_silent_frame_is_audio() -> None:
    features = padded(500)
    features[:, 400:500] = -1.5  # Whisper's floor: (log10(1e-10) + 4) / 4
    assert audio_frames(features) == 500


def test_the_encoder_gets_the_audio_and_the_padding_asked_for() -> None:
    features = padded(731)
    out = trimmed(features, 10.0)
    assert out.shape == (80, 1732)  # 731 + 1000 frames, made even for the encoder's stride
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, features[:, :1732])


@pytest.mark.parametrize("frames", [2000, 2999, 3000])
def test_never_more_than_whispers_30_s(frames: int) -> None:
    features = padded(frames)
    assert context_frames(frames, 10.0) == WHISPER_FRAMES
    assert trimmed(features, 10.0) is features
    assert trimmed(padded(500), 30.0).shape[-1] == WHISPER_FRAMES  # 30 s: Whisper's own


def test_a_batch_keeps_the_longest_window_and_its_padding() -> None:
    features = padded(300, batch=3)
    features[1, :, 300:900] = 0.5  # the second window is 900 frames long
    out = trimmed(features, 5.0)
    assert out.shape == (3, 80, 1400)
    np.testing.assert_array_equal(out[1, :, :900], features[1, :, :900])


def test_silence_alone_gets_the_padding() -> None:
    assert trimmed(np.zeros((80, WHISPER_FRAMES), dtype=np.float32), 10.0).shape == (80, 1000)
