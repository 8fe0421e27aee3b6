"""A live stream's audio path: PCM bytes -> 16 kHz float32 and VAD probabilities."""

from __future__ import annotations

import numpy as np

from whisperwire.audio import SAMPLE_RATE, StreamResampler, pcm_to_float32
from whisperwire.vad import StreamingVad


class AudioPipeline:
    """PCM bytes -> 16 kHz float32 + VAD probabilities. Runs in a worker thread."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        self.encoding = encoding
        self.resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self.vad = StreamingVad()

    def process(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        samples = self.resampler.process(pcm_to_float32(data, self.encoding))
        return samples, self.vad.process(samples)

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """The resampler's last samples at end of stream (not scored: the region is forced)."""
        return self.resampler.process(np.zeros(0, dtype=np.float32), last=True), np.zeros(0)
