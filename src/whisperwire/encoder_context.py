"""Whisper's encoder over the audio a decode has, and some padding, not always 30 s of it.

Whisper's encoder takes 30 s of log-mel frames; faster-whisper pads a shorter window with
zero frames to that length (`pad_or_trim`), and the encoder's cost grows faster than its input
(attention is quadratic in it): tiny.en int8 on one thread of this machine's CPU, 3000 frames
0.353 s, 2500 0.237 s, 2000 0.129 s, 1600 0.078 s, 1200 0.051 s, 1000 0.040 s. CTranslate2
takes any length; the decoder's cross-attention then covers the frames given. Whisper was
trained on padded windows, and too little padding breaks it: greedy decodes of 100 test-other
clips (WER 15.4 % with the full 30 s) gave 47 % with 1 s of padding kept, 18.4 % with 3 s,
21.5 % with 5 s (short clips came out empty or looping), and 14.0-14.9 % with 7 to 15 s
(10 s: 14.2 %, the encoder's time 39 s -> 13 s). So the encoder sees the window's frames and
`pad_s` of padding after them, never more than 30 s.

The padding is found where faster-whisper put it: the zero columns after the last frame of
audio. A frame of audio is all zeros only if each of its 80 bands is exactly at Whisper's
normalised 0 (the loudest band 10^4 and this one at the floor 10^-8 below it): then trailing
frames of digital silence count as padding too, which only shortens the padding kept.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

FRAMES_PER_S = 100
WHISPER_FRAMES = 3000  # the 30 s Whisper's encoder was trained on


def audio_frames(features: np.ndarray) -> int:
    """The frames before the trailing zero columns (the padding), over a batch's windows."""
    columns = np.flatnonzero(np.any(features != 0, axis=tuple(range(features.ndim - 1))))
    return int(columns[-1]) + 1 if columns.size else 0


def context_frames(frames: int, pad_s: float) -> int:
    """The encoder's input for `frames` of audio: `pad_s` of padding after them, an even count
    (the encoder halves it), at most Whisper's 3000."""
    wanted = frames + round(pad_s * FRAMES_PER_S)
    return min(WHISPER_FRAMES, wanted + wanted % 2)


def trimmed(features: np.ndarray, pad_s: float) -> np.ndarray:
    """`features` (n_mels x frames, or a batch of them) cut to `context_frames`."""
    keep = context_frames(audio_frames(features), pad_s)
    if keep >= features.shape[-1]:
        return features
    return np.ascontiguousarray(features[..., :keep])


class ShortContextWhisper(WhisperModel):  # type: ignore[misc]
    """faster-whisper's model whose encoder sees `pad_s` of padding after the audio, in the
    decodes run inside `short_context()` on their thread (their encodes and language
    detection); elsewhere Whisper's 30 s, as offline faster-whisper runs (whole clips)."""

    def __init__(self, *args: Any, pad_s: float = 30.0, **kwargs: Any) -> None:
        """`pad_s`: 30 is Whisper's own (the encoder always sees 30 s)."""
        super().__init__(*args, **kwargs)
        self.pad_s = pad_s
        self._short = threading.local()

    @contextmanager
    def short_context(self) -> Iterator[None]:
        was, self._short.on = getattr(self._short, "on", False), True
        try:
            yield
        finally:
            self._short.on = was

    def encode(self, features: np.ndarray) -> Any:
        if getattr(self._short, "on", False):
            features = trimmed(features, self.pad_s)
        return super().encode(features)
