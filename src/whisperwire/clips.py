"""Whole-clip transcription: `audio` messages -> base64 -> any audio file -> one transcript.

A clip of any length is transcribed with Whisper's own timestamp-driven seek (faster-whisper's
`transcribe`, as offline): each window is at most 30 s, and the next one starts where the last
complete segment ended, so the windows overlap by whatever the previous one did not finish and
no word is lost or doubled at a seam. The segment generator is advanced one step per scheduler
job, so a long clip takes one window, then every other session gets its turn; the event loop
only ever awaits.

Two departures from offline decoding keep any clip within bounds: the audio is transcribed in
pieces of at most 3 minutes, cut at the quietest moment near each piece's end (Whisper's
features of a whole hour would take ~3 GB at once; on the 13.3-minute test file the WER went
from 11.01 % to 11.27 %), and a piece in which Silero hears no speech is not decoded.

Per session, clips run one at a time in the order they arrived. Every accepted clip gets
`state processing` at once, progress while it runs, then `transcription` or an `error`, and
always `state ready` last.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisperwire import protocol as proto
from whisperwire.audio import SAMPLE_RATE, AudioDecodeError, AudioTooLong, decode_file
from whisperwire.engine import Engine
from whisperwire.limits import MemoryBudget
from whisperwire.load import LoadMonitor
from whisperwire.protocol import events as ev
from whisperwire.scheduler import Overloaded, Scheduler

log = logging.getLogger("whisperwire.clips")

MAX_CLIP_SECONDS = 2 * 3600.0  # decoded audio beyond this is refused (460 MB of float32)
MAX_QUEUED_CLIPS = 8  # per session, waiting behind the one that runs
FRAMES_PER_SECOND = 100  # Whisper's mel frames: a segment's `seek` counts these
# A clip is transcribed in pieces of at most PIECE_S, each cut at the quietest tenth of a
# second in its last SEAM_SEARCH_S: Whisper's features of a whole clip cost ~50 MB per minute
# of audio at once (an hour of audio: ~3 GB); a piece of 3 min ~170 MB, whatever its length.
PIECE_S = 180.0
SEAM_SEARCH_S = 20.0

Send = Callable[[ev.ServerEvent], Awaitable[None]]

_DATA_URL = re.compile(r"data:[\w.+/-]*(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)
_WHITESPACE = re.compile(rb"\s+")


class ClipError(Exception):
    """A clip the server cannot transcribe; `code` is one of the contract's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_base64(text: str) -> bytes:
    """`audio_data` -> file bytes. Accepts the standard and URL-safe alphabets, line breaks
    (as `base64` tools wrap), missing padding and a `data:audio/...;base64,` prefix."""
    if prefix := _DATA_URL.match(text):
        text = text[prefix.end() :]
    try:
        raw = _WHITESPACE.sub(b"", text.encode("ascii"))
    except UnicodeEncodeError:
        raise ClipError(
            proto.BASE64_DECODE_ERROR, "audio_data has characters outside base64's alphabet"
        ) from None
    if not raw:
        raise ClipError(
            proto.INVALID_MESSAGE, "audio_data is empty; send the audio file's bytes in base64"
        )
    raw = raw.translate(bytes.maketrans(b"-_", b"+/")).rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ClipError(
            proto.BASE64_DECODE_ERROR,
            f"audio_data is not valid base64: {len(raw)} characters cannot encode whole bytes "
            "(truncated?)",
        )
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error as exc:
        raise ClipError(
            proto.BASE64_DECODE_ERROR,
            f"audio_data is not valid base64 ({exc}); send the audio file's bytes encoded "
            "with standard base64",
        ) from None


def load_clip(audio_data: str, max_seconds: float = MAX_CLIP_SECONDS) -> np.ndarray:
    """base64 text of an audio file -> 16 kHz mono float32. Blocking: run it in a thread."""
    return decode_clip(decode_base64(audio_data), max_seconds)


def decode_clip(data: bytes, max_seconds: float = MAX_CLIP_SECONDS) -> np.ndarray:
    """An audio file's bytes -> 16 kHz mono float32, or a ClipError. Blocking."""
    try:
        return decode_file(data, max_seconds=max_seconds)
    except AudioTooLong as exc:
        raise ClipError(proto.MESSAGE_TOO_BIG, str(exc)) from None
    except AudioDecodeError as exc:
        raise ClipError(proto.AUDIO_DECODE_ERROR, str(exc)) from None


@dataclass(frozen=True)
class ClipJob:
    audio_id: str
    audio_data: str
    language: str
    task: str


@dataclass(frozen=True)
class ClipsStatus:
    """What the session's `status` reply says while clips are in hand."""

    audio_id: str | ev.Unset  # the running clip
    progress: float
    clips_queued: int


def pieces(samples: np.ndarray, piece_s: float = PIECE_S) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering `samples`, each at most `piece_s` long, cut at the
    quietest 0.1 s in the last `SEAM_SEARCH_S` of a piece: between words, where one can."""
    size, frame = int(piece_s * SAMPLE_RATE), SAMPLE_RATE // 10
    search = min(int(SEAM_SEARCH_S * SAMPLE_RATE), size // 2) // frame * frame
    out, start = [], 0
    while len(samples) - start > size:
        low = start + size - search
        tail = samples[low : low + search].reshape(-1, frame)
        cut = low + int(np.argmin(np.square(tail).mean(axis=1))) * frame + frame // 2
        out.append((start, cut))
        start = cut
    out.append((start, len(samples)))
    return out


def _segment(segment: Any, offset: float) -> ev.ClipSegment:
    """A faster-whisper segment of a piece starting at `offset` seconds -> the `transcription`
    message's segment; `window` is where the 30 s window that decoded it starts, so seams
    are visible."""
    return ev.ClipSegment(
        start=segment.start + offset,
        end=segment.end + offset,
        text=segment.text.strip(),
        window=segment.seek / FRAMES_PER_SECOND + offset,
    )


async def load_within(
    load: Callable[[float], np.ndarray], max_s: float, memory: MemoryBudget | None, what: str
) -> np.ndarray:
    """Decode a clip in a thread with `load(max_seconds)`, within `max_s` and the memory the
    budget has room for now: beyond the room (but not the limit) it is OVERLOADED, retry
    later; a failure that is not the clip's (MemoryError...) is INTERNAL_ERROR, logged as
    `what` ("session S: clip C")."""
    room = memory.clip_seconds() if memory is not None else max_s
    try:
        return await asyncio.to_thread(load, min(max_s, room))
    except ClipError as exc:
        if exc.code == proto.MESSAGE_TOO_BIG and room < max_s:
            raise ClipError(
                proto.OVERLOADED,
                f"the server has memory for {room / 60:.0f} min of decoded audio now (its "
                "--max-memory-mb); retry later, or send the audio in shorter clips",
            ) from None
        raise
    except Exception as exc:  # e.g. MemoryError: the server's fault, not the clip's
        ref = proto.incident()
        log.exception("%s could not be decoded [incident %s]", what, ref)
        raise ClipError(
            proto.INTERNAL_ERROR,
            f"the server could not decode the clip (incident {ref} in its log)",
        ) from exc


class ClipDecode:
    """One clip's decode through the scheduler under fairness key `key`: Whisper's seek
    stepped one scheduler job at a time, piece by piece. `language` is the one found in the
    first piece (it holds for the rest) once `segments` has run; "auto" if nothing was heard."""

    def __init__(self, engine: Engine, scheduler: Scheduler, key: str) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.key = key
        self.language: str | None = None

    async def segments(
        self, samples: np.ndarray, language: str | None, task: str, **options: Any
    ) -> AsyncIterator[tuple[float, Any]]:
        """(offset of its piece in seconds, faster-whisper segment), in order; `options` go
        to `Engine.transcribe_file`. Stop iterating to stop the decode."""
        engine, run = self.engine, self.scheduler.run
        self.language = language
        for start, end in pieces(samples):
            piece, offset = samples[start:end], start / SAMPLE_RATE
            # Whisper invents words on silence and noise ("You You You..."): a piece in
            # which Silero hears no speech is not decoded.
            if not await run(self.key, functools.partial(engine.has_speech, piece), kind="clip"):
                continue
            segments_it, info = await run(
                self.key,
                functools.partial(engine.transcribe_file, piece, self.language, task, **options),
                kind="clip",
            )
            self.language = info.language
            it: Iterator[Any] = iter(segments_it)
            while True:
                segment = await run(self.key, lambda it=it: next(it, None), kind="clip")
                if segment is None:
                    break
                yield offset, segment


class ClipQueue:
    """One session's clips: accepted in order, transcribed one at a time."""

    def __init__(
        self,
        key: str,
        engine: Engine,
        scheduler: Scheduler,
        send: Send,
        closed: Callable[[], bool],
        load: LoadMonitor | None = None,
        memory: MemoryBudget | None = None,
        max_clip_s: float = MAX_CLIP_SECONDS,
    ) -> None:
        self.key = key  # the scheduler's fairness key: the session id
        self.engine = engine
        self.scheduler = scheduler
        self._send = send
        self._closed = closed
        self._monitor = load  # a clip being transcribed keeps a worker busy
        self._memory = memory
        self._max_clip_s = max_clip_s
        self._stopped: str | None = None  # why clips are no longer transcribed
        self._waiting: deque[ClipJob] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._current: ClipJob | None = None
        self._progress = 0.0

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._waiting)

    def status(self) -> ClipsStatus | None:
        """For the session's `status` reply while clips are in hand; None when idle."""
        if not self.busy:
            return None
        current = self._current.audio_id if self._current else ev.UNSET
        return ClipsStatus(current, self._progress, len(self._waiting))

    async def submit(self, clip: proto.ClipAudio, config: proto.StreamConfig) -> None:
        """Accept a clip (answered with `state processing` at once) and return; it runs later."""
        audio_id = clip.audio_id or str(uuid.uuid4())
        if self._memory is not None and self._memory.over():
            await self._send(
                ev.Error(
                    code=proto.OVERLOADED,
                    message="the server is at its memory budget (--max-memory-mb); retry the "
                    "clip later",
                    audio_id=audio_id,
                    retry_after=10.0,
                )
            )
            await self._ready(audio_id)
            return
        if len(self._waiting) >= MAX_QUEUED_CLIPS:
            await self._send(
                ev.Error(
                    code=proto.OVERLOADED,
                    message=f"{len(self._waiting)} clips are already waiting on this session; "
                    "wait for their transcriptions (or open another session) before sending more",
                    audio_id=audio_id,
                )
            )
            await self._ready(audio_id)
            return
        language, task = clip.language or config.language, clip.task or config.task
        job = ClipJob(audio_id, clip.audio_data, language, task)
        ahead = len(self._waiting) + (self._current is not None)
        self._waiting.append(job)
        await self._send(ev.ClipProcessing(audio_id=audio_id, progress=0.0, queued=ahead))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())

    def stop(self, why: str) -> None:
        """Transcribe no more: the running clip stops at its next window and, like every
        clip still waiting, is answered with OVERLOADED (`why`) and `ready`."""
        self._stopped = why

    async def drain(self) -> None:
        """Wait until every accepted clip has its answer."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        while self._waiting and not self._closed():
            self._current = self._waiting.popleft()
            self._progress = 0.0
            if self._monitor is not None:
                self._monitor.clip_started(self.key)
            try:
                await self._transcribe(self._current)
            finally:
                self._current = None
                if self._monitor is not None:
                    self._monitor.clip_finished()
        self._waiting.clear()  # the session closed: nobody will read the rest

    async def _transcribe(self, job: ClipJob) -> None:
        try:
            self._check_stopped()
            samples = await self._load(job)
            transcription = await self._segments(job, samples)
        except ClipError as exc:
            await self._send(ev.Error(code=exc.code, message=exc.message, audio_id=job.audio_id))
        except Overloaded as exc:
            reason = f"clip not transcribed: {exc}; retry it later"
            await self._send(ev.Error(code=proto.OVERLOADED, message=reason, audio_id=job.audio_id))
        except Exception as exc:  # noqa: BLE001 - the model failed; the client must hear it
            log.exception("session %s: clip %s failed", self.key, job.audio_id)
            reason = f"transcription failed: {exc}"
            await self._send(
                ev.Error(code=proto.TRANSCRIPTION_ERROR, message=reason, audio_id=job.audio_id)
            )
        else:
            if transcription is not None:
                await self._send(transcription)
        await self._ready(job.audio_id)

    async def _load(self, job: ClipJob) -> np.ndarray:
        load = functools.partial(load_clip, job.audio_data)
        what = f"session {self.key}: clip {proto.shown(job.audio_id)}"
        return await load_within(load, self._max_clip_s, self._memory, what)

    async def _segments(self, job: ClipJob, samples: np.ndarray) -> ev.Transcription | None:
        """Step Whisper's seek one scheduler job at a time, piece by piece; None if the
        session closed. The language found in the first piece holds for the rest."""
        duration = len(samples) / SAMPLE_RATE
        decoded = ClipDecode(self.engine, self.scheduler, self.key)
        segments: list[ev.ClipSegment] = []
        text = ""  # Whisper's segment texts carry their own leading spaces (or none: CJK)
        window = None  # (piece, seek) of the last segment
        self._check_stopped()
        steps = decoded.segments(samples, job.language, job.task)
        async with contextlib.aclosing(steps):  # a return below ends the decode at once
            async for offset, segment in steps:
                segments.append(_segment(segment, offset))
                text += segment.text
                if (offset, segment.seek) != window:  # the first segment of a new 30 s window
                    window = (offset, segment.seek)
                    self._progress = min(1.0, (segment.end + offset) / duration)
                    await self._send(
                        ev.ClipProcessing(audio_id=job.audio_id, progress=self._progress)
                    )
                if self._closed():
                    return None
                self._check_stopped()
        language = decoded.language
        return ev.Transcription(
            transcription=text.strip(),
            audio_id=job.audio_id,
            language=None if language == "auto" else language,  # "auto": nothing heard
            duration=duration,
            segments=tuple(segments),
        )

    def _check_stopped(self) -> None:
        if self._stopped is not None:
            raise ClipError(proto.OVERLOADED, f"clip not transcribed: {self._stopped}")

    async def _ready(self, audio_id: str) -> None:
        if not self._closed():
            await self._send(ev.ClipReady(audio_id=audio_id))
