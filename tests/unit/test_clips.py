"""Whole clips without a model: base64, container decoding, and the per-session clip queue."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from support import AUDIO_FORMATS, encode_audio

from whisperwire import protocol as proto
from whisperwire.audio import SAMPLE_RATE, AudioDecodeError, decode_file
from whisperwire.clips import ClipError, ClipQueue, decode_base64, load_clip, pieces
from whisperwire.protocol import events as ev
from whisperwire.protocol import native
from whisperwire.scheduler import Scheduler


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(samples: np.ndarray) -> float:
    part = samples[4000:20000]
    return float(np.argmax(np.abs(np.fft.rfft(part))) * 16000 / len(part))


def wav(samples: np.ndarray, rate: int = 16000, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        scale = {1: 127, 2: 32767}[width]
        ints = np.round(samples * scale).astype({1: np.int16, 2: "<i2"}[width])
        w.writeframes((ints + 128).astype(np.uint8).tobytes() if width == 1 else ints.tobytes())
    return buffer.getvalue()


# --------------------------------------------------------------------------- base64


def test_base64_variants_all_decode() -> None:
    data = bytes(range(256)) * 3 + b"\xfb\xff"
    plain = base64.b64encode(data).decode()
    for text in [
        plain,
        base64.urlsafe_b64encode(data).decode(),
        plain.rstrip("="),
        "\n".join(plain[i : i + 76] for i in range(0, len(plain), 76)),  # as `base64` wraps
        "data:audio/flac;base64," + plain,
    ]:
        assert decode_base64(text) == data


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", proto.INVALID_MESSAGE),
        ("  \n ", proto.INVALID_MESSAGE),
        ("UklGR$$$", proto.BASE64_DECODE_ERROR),
        ("UklGRg=x", proto.BASE64_DECODE_ERROR),
        ("UklGR", proto.BASE64_DECODE_ERROR),  # 5 characters cannot encode whole bytes
        ("UklGRé==", proto.BASE64_DECODE_ERROR),
    ],
)
def test_bad_base64_is_named(text: str, code: str) -> None:
    with pytest.raises(ClipError) as info:
        decode_base64(text)
    assert info.value.code == code and "audio_data" in info.value.message


# --------------------------------------------------------------------------- containers


@pytest.mark.parametrize("kind", sorted(AUDIO_FORMATS))
@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2), (48000, 1)])
def test_every_format_decodes_to_16k_mono(kind: str, rate: int, channels: int) -> None:
    data = encode_audio(tone(3.0, rate), rate, kind, channels)
    out = decode_file(data)
    assert out.dtype == np.float32
    assert abs(len(out) - 48000) <= 1200, "3 s at 16 kHz (codec priming aside)"
    assert abs(peak_hz(out) - 440) < 5
    rms = float(np.sqrt(np.mean(out[4000:40000] ** 2)))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.1), "a downmix, not a sum"


def test_channels_are_averaged() -> None:
    import av

    left, right = tone(2.0, 16000), np.zeros(32000, np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_f32le", rate=16000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([left, right]), format="fltp", layout="stereo")
        frame.rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert np.allclose(decode_file(buffer.getvalue()), left / 2, atol=1e-6)


def test_integer_formats_are_scaled_to_unit_range() -> None:
    x = tone(1.0, 16000)
    assert np.allclose(decode_file(wav(x, width=2)), x, atol=1e-4)
    assert np.allclose(decode_file(wav(x, width=1)), x, atol=1e-2)


def test_truncated_file_keeps_what_decodes() -> None:
    data = encode_audio(tone(4.0, 16000), 16000, "flac")
    out = decode_file(data[: len(data) // 2])
    assert 16000 < len(out) < 64000


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"this is a text file, not a recording\n" * 20, "not an audio file"),
        (np.random.default_rng(3).bytes(4096), "not an audio file"),
        (wav(np.zeros(0, np.float32)), "no audio samples"),
    ],
)
def test_bytes_that_are_not_audio(data: bytes, words: str) -> None:
    with pytest.raises(AudioDecodeError, match=words):
        decode_file(data)
    with pytest.raises(ClipError) as info:
        load_clip(base64.b64encode(data).decode())
    assert info.value.code == proto.AUDIO_DECODE_ERROR


def test_audio_over_the_length_limit_is_refused_while_decoding() -> None:
    text = base64.b64encode(wav(tone(3.0, 16000))).decode()
    assert len(load_clip(text, max_seconds=5)) == 48000
    with pytest.raises(ClipError) as info:
        load_clip(text, max_seconds=2)
    assert info.value.code == proto.MESSAGE_TOO_BIG and "split" in info.value.message


# --------------------------------------------------------------------------- the queue


@dataclass
class Segment:
    seek: int
    start: float
    end: float
    text: str


@dataclass
class Info:
    language: str = "en"


class FakeEngine:
    """Three 'windows' of segments per clip; text says which clip (its length in seconds)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def has_speech(self, audio: np.ndarray) -> bool:
        return bool(np.abs(audio).max() > 0)  # anything but digital silence

    def transcribe_file(
        self, audio: np.ndarray, language: str | None, task: str
    ) -> tuple[Iterator[Segment], Info]:
        self.calls.append((str(language), task))
        n = len(audio) / 16000

        def segments() -> Iterator[Segment]:
            for i in range(3):
                if self.fail and i == 1:
                    raise RuntimeError("the model ran out of memory")
                yield Segment(i * 3000, n * i / 3, n * (i + 1) / 3, f" part {i} of {n:g}")

        return segments(), Info()


def run_clips(engine: FakeEngine, texts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit clip messages back to back on one session; collect replies until idle."""
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        scheduler = Scheduler()
        try:

            async def send(event: ev.ServerEvent) -> None:
                sent.append(native.payload(event))

            queue = ClipQueue("s1", engine, scheduler, send, lambda: False)  # type: ignore[arg-type]
            codec = proto.Codec()
            for obj in texts:
                clip = codec.receive_text(json.dumps(obj))
                assert isinstance(clip, proto.ClipAudio)
                await queue.submit(clip, codec.config)
            # Every clip waits until the loop runs the queue, which then takes the first.
            status = queue.status()
            assert status is not None and (status.progress, status.clips_queued) == (
                0.0,
                len(texts),
            )
            await asyncio.sleep(0)
            status = queue.status()
            assert status is not None and status.clips_queued == len(texts) - 1
            while queue.busy:
                await asyncio.sleep(0.01)
            assert queue.status() is None
        finally:
            scheduler.close()

    asyncio.run(main())
    return sent


def clip(seconds: float, **extra: Any) -> dict[str, Any]:
    data = base64.b64encode(wav(tone(seconds, 16000))).decode()
    return {"type": "audio", "audio_data": data, **extra}


def test_clip_replies_in_contract_order_with_progress() -> None:
    sent = run_clips(FakeEngine(), [clip(3.0, audio_id="a")])
    kinds = [(m["type"], m.get("state")) for m in sent]
    assert kinds[0] == ("state", "processing") and kinds[-2:] == [
        ("transcription", None),
        ("state", "ready"),
    ]
    assert all(m["audio_id"] == "a" for m in sent)
    progress = [m["progress"] for m in sent if m.get("state") == "processing"]
    assert progress == sorted(progress) and progress[0] == 0.0 and len(progress) == 4
    result = sent[-2]
    assert result["transcription"] == "part 0 of 3 part 1 of 3 part 2 of 3"
    assert result["duration"] == 3.0 and result["language"] == "en"
    assert [s["text"] for s in result["segments"]] == ["part 0 of 3", "part 1 of 3", "part 2 of 3"]
    assert result["segments"][2] == {**result["segments"][2], "start": 2.0, "end": 3.0}
    assert [s["window"] for s in result["segments"]] == [0.0, 30.0, 60.0]


def test_a_silent_clip_is_answered_without_decoding() -> None:
    engine = FakeEngine()
    data = base64.b64encode(wav(np.zeros(3 * 16000, np.float32))).decode()
    sent = run_clips(engine, [{"type": "audio", "audio_data": data, "audio_id": "quiet"}])
    assert sent[-2] == {**sent[-2], "type": "transcription", "transcription": "", "segments": []}
    assert engine.calls == [], "no speech, no decode"


def test_clips_run_in_order_and_ids_are_generated() -> None:
    engine = FakeEngine()
    sent = run_clips(engine, [clip(2.0), clip(1.0, audio_id=7, language="en")])
    results = [m for m in sent if m["type"] == "transcription"]
    assert [r["duration"] for r in results] == [2.0, 1.0]
    first, second = results[0]["audio_id"], results[1]["audio_id"]
    assert len(first) == 36 and second == "7"
    queued = [m["queued"] for m in sent if "queued" in m]
    assert queued == [0, 1], "the second clip waits behind the first"
    readies = [m["audio_id"] for m in sent if m.get("state") == "ready"]
    assert readies == [first, second]


def test_errors_still_end_with_ready() -> None:
    bad = [
        {"type": "audio", "audio_id": "b64", "audio_data": "!!!!"},
        {"type": "audio", "audio_id": "junk", "audio_data": base64.b64encode(b"x" * 999).decode()},
        {"type": "audio", "audio_id": "empty", "audio_data": ""},
    ]
    sent = run_clips(FakeEngine(), bad)
    errors = {m["audio_id"]: m["code"] for m in sent if m["type"] == "error"}
    assert errors == {
        "b64": proto.BASE64_DECODE_ERROR,
        "junk": proto.AUDIO_DECODE_ERROR,
        "empty": proto.INVALID_MESSAGE,
    }
    assert [m["audio_id"] for m in sent if m.get("state") == "ready"] == ["b64", "junk", "empty"]


def test_model_failure_is_a_transcription_error_then_ready() -> None:
    sent = run_clips(FakeEngine(fail=True), [clip(1.0, audio_id="m")])
    assert [m["type"] for m in sent][-2:] == ["error", "state"]
    assert sent[-2]["code"] == proto.TRANSCRIPTION_ERROR and "out of memory" in sent[-2]["message"]
    assert sent[-1] == {**sent[-1], "state": "ready", "audio_id": "m"}


def test_a_closed_session_stops_its_clip_between_windows() -> None:
    sent: list[dict[str, Any]] = []
    steps: list[int] = []

    class CountingEngine(FakeEngine):
        def transcribe_file(
            self, audio: np.ndarray, language: str | None, task: str
        ) -> tuple[Iterator[Segment], Info]:
            segments, info = super().transcribe_file(audio, language, task)

            def counted() -> Iterator[Segment]:
                for segment in segments:
                    steps.append(1)
                    yield segment

            return counted(), info

    async def main() -> None:
        scheduler = Scheduler()
        closed = False

        async def send(event: ev.ServerEvent) -> None:
            nonlocal closed
            message = native.payload(event)
            sent.append(message)
            closed = closed or message.get("progress", 0) > 0  # the client leaves mid-clip

        try:
            queue = ClipQueue("s1", CountingEngine(), scheduler, send, lambda: closed)  # type: ignore[arg-type]
            codec = proto.Codec()
            for _ in range(2):
                message = codec.receive_text(json.dumps(clip(3.0)))
                assert isinstance(message, proto.ClipAudio)
                await queue.submit(message, codec.config)
            while queue.busy:
                await asyncio.sleep(0.01)
        finally:
            scheduler.close()

    asyncio.run(main())
    assert len(steps) == 1, "no window is decoded for a session that has gone"
    assert [m["type"] for m in sent] == ["state", "state", "state"]  # 2 accepted, 1 progress


def test_a_long_clip_is_cut_into_pieces_at_its_quietest_moments() -> None:
    """Pieces cover the clip end to end, none longer than asked, each cut in a pause."""
    rng = np.random.default_rng(0)
    seconds = 500
    samples = (0.3 * rng.standard_normal(seconds * SAMPLE_RATE)).astype(np.float32)
    pauses = [170.2, 345.7]  # a 0.3 s pause inside the search span of each cut
    for at in pauses:
        samples[int(at * SAMPLE_RATE) : int((at + 0.3) * SAMPLE_RATE)] = 0.0
    cuts = pieces(samples, piece_s=180.0)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(samples)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:], strict=False))
    assert all(0 < end - start <= 180 * SAMPLE_RATE for start, end in cuts)
    for (_, cut), at in zip(cuts, pauses, strict=False):
        assert at <= cut / SAMPLE_RATE <= at + 0.3
    assert pieces(samples[: 10 * SAMPLE_RATE]) == [(0, 10 * SAMPLE_RATE)]


def test_stopped_clips_are_answered_overloaded_then_ready() -> None:
    """On shutdown the running clip stops at its next window and every waiting one is
    answered: OVERLOADED (send it again), then `ready`; nothing is left unanswered."""
    engine, sent = FakeEngine(), []

    async def main() -> None:
        scheduler = Scheduler()

        async def send(event: ev.ServerEvent) -> None:
            message = native.payload(event)
            sent.append(message)
            if message.get("state") == "processing" and message.get("progress", 0) > 0:
                queue.stop("the server is shutting down")  # during the first clip's windows

        queue = ClipQueue("s1", engine, scheduler, send, lambda: False)  # type: ignore[arg-type]
        codec = proto.Codec()
        for obj in (clip(3.0, audio_id="a"), clip(2.0, audio_id="b")):
            message = codec.receive_text(json.dumps(obj))
            assert isinstance(message, proto.ClipAudio)
            await queue.submit(message, codec.config)
        await queue.drain()
        scheduler.close()

    asyncio.run(main())
    answers = [(m["audio_id"], m.get("code") or m.get("state")) for m in sent
               if m["type"] == "error" or m.get("state") == "ready"]  # fmt: skip
    assert answers == [("a", "OVERLOADED"), ("a", "ready"), ("b", "OVERLOADED"), ("b", "ready")]
    assert not [m for m in sent if m["type"] == "transcription"]
