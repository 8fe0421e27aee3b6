"""Sans-I/O endpointing: Silero VAD probabilities (one per 512 samples) -> speech regions.

A causal hysteresis: speech starts when a probability reaches the threshold and ends after
`min_silence_s` below threshold - offset. Regions shorter than `min_speech_s` are held as
blips and joined to speech that follows soon; padding is kept around each region. The
streaming policy (`policy.py`) decodes the regions this yields.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from whisperwire.policy_config import PolicyConfig

SAMPLE_RATE = 16000
VAD_CHUNK = 512  # samples per Silero probability


@dataclass
class Region:
    start: int  # absolute sample, padding included
    end: int | None = None  # None while the region is open
    voiced: int = 0  # samples scored as speech so far
    confirmed: bool = False  # voiced >= min_speech: decodable, never discarded
    forced: bool = False  # closed by `force_end` (flush, end), not by a pause


class Endpointer:
    """Causal VAD hysteresis: probabilities per 512 samples -> speech regions (in samples)."""

    def __init__(self, config: PolicyConfig) -> None:
        self.cfg = config
        self.regions: deque[Region] = deque()  # regions not yet handed over
        self._triggered = False
        self._temp_end = 0
        self._pos = 0  # absolute sample after the last scored chunk
        self._last_end = 0  # end of the previous region: the next never starts before it
        self._blip: tuple[int, int] | None = None  # the last too-short region (start, end)

    def feed(self, probs: np.ndarray) -> None:
        cfg = self.cfg
        neg = cfg.vad_threshold - cfg.vad_neg_offset
        min_silence = int(cfg.min_silence_s * SAMPLE_RATE)
        gap = cfg.context_gap_s * SAMPLE_RATE
        for p in probs:
            chunk_start = self._pos
            self._pos += VAD_CHUNK
            if p >= cfg.vad_threshold:
                self._temp_end = 0
                if not self._triggered:
                    self._triggered = True
                    start = chunk_start - int(cfg.speech_pad_s * SAMPLE_RATE)
                    if self._blip is not None:  # a short word just before: keep it
                        start = min(start, self._blip[0])
                        self._blip = None
                    self.regions.append(Region(max(self._last_end, start)))
                region = self.regions[-1]
                region.voiced += VAD_CHUNK
                region.confirmed = region.voiced >= cfg.min_speech_s * SAMPLE_RATE
            elif self._blip is not None and self._pos - self._blip[1] > gap:
                self._blip = None  # no speech followed: the blip was noise
            if p < neg and self._triggered:
                if not self._temp_end:
                    self._temp_end = chunk_start
                if self._pos - self._temp_end >= min_silence:  # padded with what has come
                    self._close(min(self._pos, self._temp_end + int(cfg.end_pad_s * SAMPLE_RATE)))

    def start_at(self, position: int) -> None:
        """The stream's first sample is `position`, not 0 (a stream taken over mid-way)."""
        self._pos = self._last_end = position

    def earliest_start(self, total: int) -> int:
        """The earliest sample a region still to come (or queued) may start at."""
        earliest = total - int(self.cfg.speech_pad_s * SAMPLE_RATE) - VAD_CHUNK
        if self.regions:
            earliest = min(earliest, self.regions[0].start)
        if self._blip is not None:
            earliest = min(earliest, self._blip[0])
        return max(0, earliest)

    def join_next(self, started_by: int, barriers: list[int]) -> None:
        """Join to the first region, closed by a pause, the next ones that follow it within
        `context_gap_s` and started by sample `started_by`, unless a barrier (a flush's
        sample) lies in the pause between: they are then decoded as one region."""
        regions, gap = self.regions, int(self.cfg.context_gap_s * SAMPLE_RATE)
        while len(regions) > 1 and regions[0].end is not None and not regions[0].forced:
            region, after = regions[0], regions[1]
            end = region.end
            assert end is not None
            if not after.confirmed or after.start - end > gap or after.start > started_by:
                return
            if any(end <= at <= after.start for at in barriers):
                return
            region.end, region.forced = after.end, after.forced
            region.voiced += after.voiced
            del regions[1]

    def force_end(self, at: int) -> None:
        """Close any open region at `at` (flush / end of stream).

        The speaker is done, so a short word is decoded rather than waiting for more speech:
        an open region or a recent blip is confirmed however short it is.
        """
        if self._blip is not None:
            if not self._triggered:
                self._triggered = True
                self.regions.append(Region(max(self._last_end, self._blip[0])))
            self.regions[-1].start = max(self._last_end, min(self.regions[-1].start, self._blip[0]))
            self._blip = None
        if self._triggered:
            self.regions[-1].confirmed = True
            self.regions[-1].forced = True
            self._close(max(at, self.regions[-1].start))
        self._last_end = max(self._last_end, at)  # what follows is after it, padding too

    def _close(self, end: int) -> None:
        self._triggered = False
        self._temp_end = 0
        region = self.regions[-1]
        if not region.confirmed:
            # Too short to decode alone; it joins the next region if one follows soon.
            self.regions.pop()
            self._blip = (region.start, end)
            return
        region.end = end
        self._last_end = end
