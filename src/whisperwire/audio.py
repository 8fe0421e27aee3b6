"""Audio conversion: PCM frames -> float32 mono at 16 kHz, with streaming resampling (soxr)."""

from __future__ import annotations

import numpy as np
import soxr

SAMPLE_RATE = 16000  # what Whisper and Silero want


def pcm_to_float32(data: bytes, encoding: str) -> np.ndarray:
    """Little-endian PCM bytes -> float32 samples in [-1, 1]."""
    if encoding == "s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "f32le":
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        # A NaN or inf would poison the resampler state and the model input.
        if not np.isfinite(samples).all():
            samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(samples, -1.0, 1.0)
    raise ValueError(f"unknown encoding {encoding!r}")


class StreamResampler:
    """Resamples a stream chunk by chunk to 16 kHz; state carries across chunks."""

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)
