"""What a run sends: the audio of every scenario's sessions, and their offline reference."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperwire.bench.arguments import Plan
from whisperwire.bench.corpus import (
    NOISES,
    Clip,
    OfflineReference,
    Piece,
    StreamAudio,
    clip_durations,
    concurrent_streams,
    join_clips,
    librispeech_clips,
    load,
    long_clip,
    noise,
)
from whisperwire.bench.scenarios.soak import soak_inputs


@dataclass
class Inputs:
    """The sessions' audio, by scenario (empty for the scenarios the plan leaves out)."""

    accuracy: list[StreamAudio]
    capacity: dict[int, list[StreamAudio]]
    long: StreamAudio | None = None
    noises: list[StreamAudio] = field(default_factory=list)
    soak: StreamAudio | None = None
    soak_shorts: list[StreamAudio] = field(default_factory=list)

    def seconds(self, plan: Plan) -> float:
        """Real-time seconds of audio one system streams through the planned scenarios."""
        total = 0.0
        if "accuracy" in plan.scenarios:
            total += sum(s.duration for s in self.accuracy)
        if "noise" in plan.scenarios:
            total += plan.noise_s
        if "capacity" in plan.scenarios:
            total += sum(max(s.duration for s in ss) for ss in self.capacity.values())
        if self.long is not None:
            total += self.long.duration
        if self.soak is not None:
            total += self.soak.duration
        return total

    def clips(self, plan: Plan) -> list[Clip]:
        """Every clip the planned scenarios score against the offline reference."""
        needed: dict[str, Clip] = {}
        if "accuracy" in plan.scenarios:
            needed.update({p.clip.key: p.clip for s in self.accuracy for p in s.pieces})
        if "capacity" in plan.scenarios:
            needed.update(
                {p.clip.key: p.clip for ss in self.capacity.values() for s in ss for p in s.pieces}
            )
        if self.long is not None:
            needed.update({p.clip.key: p.clip for p in self.long.pieces})
        for stream in [self.soak, *self.soak_shorts] if self.soak is not None else []:
            needed.update({p.clip.key: p.clip for p in stream.pieces})
        return list(needed.values())


def prepare_inputs(root: Path, plan: Plan) -> Inputs:
    order = librispeech_clips(root)
    if plan.max_clip_s is not None:
        durations = clip_durations(order)
        order = [c for c in order if durations[c.name] <= plan.max_clip_s]
    inputs = Inputs(
        accuracy=[join_clips(c.name, [c]) for c in order[: plan.clips]],
        capacity={n: concurrent_streams(order, n, plan.stream_s) for n in plan.n},
    )
    if "long" in plan.scenarios:
        clip = long_clip(root, plan.long_s)
        inputs.long = StreamAudio(
            clip.name, load(clip.path, clip.start, clip.end), [Piece(clip, 0)]
        )
    if "soak" in plan.scenarios:
        inputs.soak, inputs.soak_shorts = soak_inputs(root, plan.soak_s, plan.soak_every_s)
    if "noise" in plan.scenarios:
        inputs.noises = [StreamAudio(kind, noise(kind, plan.noise_s)) for kind in NOISES]
    return inputs


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisperwire" / "bench-offline.json"


def offline_reference(
    inputs: Inputs, plan: Plan, cache: Path | None, show_progress: bool
) -> OfflineReference:
    """The offline reference of every clip the run scores, computed now for those not in
    the cache; its model is released before the servers start."""
    offline = OfflineReference(cache or default_cache(), plan.beam_size, threads=plan.threads)
    todo = [c for c in inputs.clips(plan) if not offline.cached(c)]
    if todo:
        print(
            f"[bench] offline reference: {len(todo)} clips through faster-whisper", file=sys.stderr
        )
        iterator: Any = todo
        if show_progress:
            try:
                from tqdm import tqdm

                iterator = tqdm(todo, desc="offline", unit="clip")
            except ImportError:
                pass
        for clip in iterator:
            offline.get(clip)
    offline.release()
    return offline
