"""One model for several ingress replicas (`serve --ray --ray-model-replicas N`).

`WhisperModel` is a Ray Serve deployment that holds the engine (the model loaded once, its
workers and batch); the ingress replicas (`ray_app.Whisperwire`), which hold the sessions,
decode through `RemoteEngine`, a stand-in for `Engine` that sends each decode to it, named by
its session. In the model, the decodes of every app replica's sessions go through one
`Scheduler`, as in one process: each session its turn, partial updates of one batch group
waiting together decoded in one call (`Engine.decode_batch`), a lone session on the solo
lane. Ray's `@serve.batch` would batch whatever arrives within a wait, with neither the
sessions' turns nor the groups. Silero (`has_speech`) stays in the app replica: it is cheap,
and its audio need not travel.

Where the model sits on a GPU, this is where throughput comes from: one copy of the weights,
the batch filled by every session of the cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from whisperwire import vad
from whisperwire.allocator import limit_arenas
from whisperwire.policy_events import DecodeRequest
from whisperwire.scheduler import Scheduler, running_key
from whisperwire.services import batchable
from whisperwire.settings import load_settings
from whisperwire.words import Hypothesis

__all__ = ["MODEL_DEPLOYMENT", "RemoteEngine", "WhisperModel"]

MODEL_DEPLOYMENT = "whisperwire-model"


@serve.deployment(name=MODEL_DEPLOYMENT)
class WhisperModel:
    """The engine the settings describe, decoding for every app replica through one
    `Scheduler`: its workers, its batches across sessions, its solo lane."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from whisperwire.cli import checked_model, load_engine

        self.settings = load_settings(**settings)
        limit_arenas(self.settings.malloc_arenas)  # for the threads started from here on
        engine = self.engine = load_engine(self.settings, checked_model(self.settings))
        self.scheduler = Scheduler(
            workers=engine.workers,
            max_batch=engine.batch,
            solo=engine.solo_lane if engine.has_solo_lane else None,
        )

    def info(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "name": engine.name,
            "multilingual": engine.multilingual,
            "languages": sorted(engine.languages),
            "workers": engine.workers,
            "decode_estimate_s": engine.decode_estimate_s,
        }

    async def decode(self, request: DecodeRequest, key: str) -> Hypothesis:
        """`key`: the session, among those of every app replica (its turn, its solo lane)."""
        engine = self.engine
        job = functools.partial(engine.decode, request)
        batch = batchable(engine, request, engine.decode_batch)
        return await self.scheduler.run(key, job, batch, kind=request.kind)

    async def transcribe_file(
        self, key: str, audio: np.ndarray, language: str | None, task: str, **options: Any
    ) -> tuple[list[Any], Any]:
        """A clip's piece, decoded whole (its segments, Whisper's info)."""

        def run() -> tuple[list[Any], Any]:
            segments, info = self.engine.transcribe_file(audio, language, task, **options)
            return list(segments), info

        return await self.scheduler.run(key, run, kind="clip")


class RemoteEngine:
    """What the server needs of an `Engine`, with the decodes sent to `WhisperModel`. Its
    methods block: they are called from the scheduler's worker threads, as `Engine`'s are."""

    def __init__(
        self, model: DeploymentHandle, info: dict[str, Any], replica: str, share: float = 1.0
    ) -> None:
        """`info`: what `WhisperModel.info` answered; `replica`: this app replica's name;
        `share`: the model replicas' workers it counts as its own (the model replicas over
        the app replicas)."""
        self.model = model
        self.replica = replica
        self.name: str = info["name"]
        self.multilingual: bool = info["multilingual"]
        self.languages = frozenset(info["languages"])
        # Its share of the model's workers: its cadence and admission then plan for what
        # the model gives it, not for all of it (two app replicas on one 2-worker model,
        # each counting two workers, sent it twice the decodes it could run: four streams
        # took 240 s to test against 168 s with a worker each). Its batches are formed in
        # the model, with the other app replicas' decodes.
        self.workers = max(1, round(info["workers"] * share))
        self.batch = 1  # so the server asks it for no batch group, no batch
        self.decode_estimate_s: float = info["decode_estimate_s"]
        self.has_solo_lane = False  # so the server gives its scheduler no solo lane

    def decode(self, request: DecodeRequest) -> Hypothesis:
        return self.model.decode.remote(request, self._key()).result()

    def _key(self) -> str:
        """The session whose job calls, named across the app replicas."""
        return f"{self.replica}/{running_key()}"

    def has_speech(self, audio: np.ndarray) -> bool:
        return vad.has_speech(audio)

    def transcribe_file(
        self, audio: np.ndarray, language: str | None, task: str, **options: Any
    ) -> tuple[Iterator[Any], Any]:
        response = self.model.transcribe_file.remote(self._key(), audio, language, task, **options)
        segments, info = response.result()
        return iter(segments), info
