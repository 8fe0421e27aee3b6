"""PCM conversion and streaming resampling."""

from __future__ import annotations

import numpy as np

from whisperwire.audio import StreamResampler, pcm_to_float32


def test_pcm_encodings_round_trip() -> None:
    x = np.linspace(-0.9, 0.9, 1000).astype(np.float32)
    s16 = (x * 32768).astype("<i2").tobytes()
    assert np.allclose(pcm_to_float32(s16, "s16le"), x, atol=1e-4)
    assert np.allclose(pcm_to_float32(x.astype("<f4").tobytes(), "f32le"), x)


def test_non_finite_float_samples_are_neutralised() -> None:
    bad = np.array([np.nan, np.inf, -np.inf, 2.0], dtype="<f4").tobytes()
    out = pcm_to_float32(bad, "f32le")
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0


def test_chunked_resampling_matches_length_and_pitch() -> None:
    rate = 44100
    t = np.arange(rate * 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    resampler = StreamResampler(rate)
    parts = [resampler.process(tone[i : i + 4410]) for i in range(0, len(tone), 4410)]
    parts.append(resampler.process(np.zeros(0, dtype=np.float32), last=True))
    out = np.concatenate(parts)
    assert abs(len(out) - 32000) <= 2
    spectrum = np.abs(np.fft.rfft(out[4000:20000]))
    peak_hz = np.argmax(spectrum) * 16000 / len(out[4000:20000])
    assert abs(peak_hz - 440) < 5
