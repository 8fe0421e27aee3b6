"""Audio conversion to float32 mono at 16 kHz: PCM frames with streaming resampling (soxr),
and whole audio files in any container (PyAV)."""

from __future__ import annotations

import functools
import io

import av
import numpy as np
import soxr

SAMPLE_RATE = 16000  # what Whisper and Silero want


@functools.cache
def _g711(codec: str) -> np.ndarray:
    """G.711's 256 byte values expanded to float32, by FFmpeg's decoder (PyAV)."""
    context = av.CodecContext.create(codec, "r")
    context.sample_rate, context.layout = 8000, "mono"
    frames = context.decode(av.Packet(bytes(range(256))))
    pcm = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    return pcm.astype(np.float32) / 32768.0


def pcm_to_float32(data: bytes, encoding: str) -> np.ndarray:
    """Little-endian PCM bytes (or G.711 `mulaw`/`alaw` bytes) -> float32 samples in [-1, 1]."""
    if encoding == "s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding in ("mulaw", "alaw"):
        table = _g711("pcm_mulaw" if encoding == "mulaw" else "pcm_alaw")
        return table[np.frombuffer(data, dtype=np.uint8)]
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


# --------------------------------------------------------------------------- whole files

# Full scale of each integer sample format (PyAV's names; a trailing "p" means planar).
_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


class AudioDecodeError(ValueError):
    """Bytes that are not a decodable audio file; the message says what was wrong."""


class AudioTooLong(AudioDecodeError):
    """Decodable audio, but longer than the caller's limit."""


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame in any sample format and layout -> float32 mono (channel mean)."""
    name = frame.format.name.removesuffix("p")
    channels = len(frame.layout.channels)
    raw = frame.to_ndarray()
    if not frame.format.is_planar:  # interleaved: one row of samples * channels
        raw = raw.reshape(-1, channels).T
    with np.errstate(over="ignore"):  # a double beyond float32's range is inf, then clipped
        samples = raw.astype(np.float32)
    if name == "u8":
        samples -= 128.0
    if name in _FULL_SCALE:
        samples /= _FULL_SCALE[name]
    else:  # flt, dbl: a NaN or inf would poison the resampler and the model input
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    mono = samples.mean(axis=0) if channels > 1 else samples[0]
    return np.clip(mono, -1.0, 1.0)


def decode_file(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """An audio file's bytes (any container and codec FFmpeg reads: WAV, FLAC, MP3, Ogg/Opus,
    WebM, M4A...) -> 16 kHz mono float32: channels are averaged, any rate is resampled (soxr).

    Its first audio stream is decoded; damaged packets are skipped, as FFmpeg's own tools do.
    Raises AudioDecodeError for bytes that are not audio or a file without an audio stream or
    samples, and AudioTooLong for audio longer than `max_seconds` (checked while decoding,
    before the memory for all of it is spent). Blocking: call it from a worker thread.
    """
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise AudioDecodeError(
            f"the data is not an audio file FFmpeg can read ({exc.strerror or exc}); "
            "send WAV, FLAC, MP3, Ogg/Opus, WebM or M4A"
        ) from None
    with container:
        kind = container.format.name
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise AudioDecodeError(f"the {kind} file has no audio stream (streams: {kinds})")
        stream = container.streams.audio[0]
        parts: list[np.ndarray] = []
        total = 0
        resampler: StreamResampler | None = None
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    continue  # a damaged packet: skip it, keep the rest
                for frame in frames:
                    if resampler is None or frame.rate != resampler.in_rate:
                        if resampler is not None:  # the rate changed mid-stream (chained Ogg)
                            parts.append(resampler.process(np.zeros(0, np.float32), last=True))
                        resampler = StreamResampler(frame.rate)
                    out = resampler.process(_frame_to_mono(frame))
                    parts.append(out)
                    total += len(out)
                    if max_seconds is not None and total > max_seconds * SAMPLE_RATE:
                        raise AudioTooLong(
                            f"the audio is longer than the server's limit of "
                            f"{max_seconds / 3600:.3g} h (--max-clip-seconds); split it into "
                            "shorter clips"
                        )
        except av.FFmpegError as exc:
            if not total:
                raise AudioDecodeError(
                    f"the {kind} data cannot be decoded ({exc.strerror or exc})"
                ) from None
            # A truncated file: keep the audio decoded so far.
        if resampler is not None:
            parts.append(resampler.process(np.zeros(0, np.float32), last=True))
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if not len(samples):
        raise AudioDecodeError(f"the {kind} file contains no audio samples")
    return samples.astype(np.float32, copy=False)
