"""`whisperwire replay`: the streaming policy run on recordings on a virtual clock.

A live bench run measures the server as users get it, but two runs of the same server differ
by 2-3 points of long-form WER: when each decode starts depends on how fast the machine was a
moment ago, and Whisper's answer depends on where its window ends. A replay takes the machine
out: audio arrives in 0.1 s frames on a virtual clock, every decode the policy asks for runs
on the real model at once and its answer is applied when a fixed cost model says it would be
done (`DecodeCost`), as one worker would serve one stream. The same settings give the same
transcript run after run on one machine (nearly: Intel MKL's sums may depend on the memory's
alignment; across kinds of CPU they differ), so two policies are compared on the words alone;
`--seed` with several seeds gives the median of as many live-like runs. Lags are virtual too:
what the policy would give on a machine as fast as the cost model.

Each variant is given as `serve` flags (`--server-args`, `--also NAME=FLAGS`), so a setting
found here is tried on the live bench with the same words.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, astuple, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from whisperwire.endpointing import SAMPLE_RATE, VAD_CHUNK
from whisperwire.policy import Policy
from whisperwire.policy_config import PolicyConfig
from whisperwire.policy_events import DecodeRequest, Final, Partial
from whisperwire.words import Hypothesis

FRAME_S = 0.1  # audio arrives in frames this long, as the bench's clients send it
WINDOW_S = 60.0  # the first and last minute of a long recording, compared


@dataclass(frozen=True)
class DecodeCost:
    """Virtual seconds a decode takes: a fixed part and a part per second of window. Fitted
    to tiny.en int8 on 2 cores (issue 11's figures): greedy 0.59 / 0.77 / 1.30 s and beam 5
    with word times 0.69 / 1.08 / 1.90 s for 2 / 10 / 25 s of audio."""

    partial_s: float = 0.53
    partial_per_s: float = 0.031
    thorough_s: float = 0.58
    thorough_per_s: float = 0.052

    def __call__(self, request: DecodeRequest, greedy_partials: bool = True) -> float:
        length = len(request.audio) / SAMPLE_RATE
        if request.kind == "partial" and greedy_partials:
            return self.partial_s + self.partial_per_s * length
        return self.thorough(length)

    def thorough(self, length_s: float) -> float:
        """A beam-5 decode (with fallback and word times) of `length_s` seconds of audio."""
        return self.thorough_s + self.thorough_per_s * length_s


@dataclass
class Jittered:
    """A cost model whose decodes each take a random share more or less (uniform within
    `jitter` of it), as a live machine's do: a live run's words depend on when each decode
    started, and a seeded jitter gives that variation reproducibly (one seed, one run)."""

    cost: Callable[[DecodeRequest], float]
    jitter: float
    rng: np.random.Generator

    def __call__(self, request: DecodeRequest) -> float:
        return self.cost(request) * (1.0 + self.jitter * self.rng.uniform(-1.0, 1.0))


@dataclass
class Replayed:
    """What a client would have received, on the virtual clock."""

    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    decodes: int = 0

    @property
    def text(self) -> str:
        return " ".join(m["text"] for _, m in self.messages if m["type"] == "final").strip()


def replay(
    policy: Policy,
    audio: np.ndarray,
    probs: np.ndarray,
    decode: Callable[[DecodeRequest], Hypothesis],
    cost: Callable[[DecodeRequest], float],
) -> Replayed:
    """Stream `audio` (16 kHz) with its VAD probabilities (one per 512 samples) through
    `policy` on a virtual clock: one decode at a time, applied `cost(request)` seconds after
    it was asked for; then the end of the stream, and every decode it still needs."""
    out = Replayed()
    pending: tuple[DecodeRequest, float, Hypothesis] | None = None

    def collect(now: float) -> None:
        for event in policy.events():
            if isinstance(event, Final | Partial):
                kind = "final" if isinstance(event, Final) else "partial"
                out.messages.append((now, {"type": kind, "text": event.text}))

    def settle(now: float) -> None:
        nonlocal pending
        if pending is not None and pending[1] <= now + 1e-9:
            request, done, hypothesis = pending
            pending = None
            policy.apply(request, hypothesis)
            collect(done)
        if pending is None:
            request = policy.next_request()
            collect(now)
            if request is not None:
                out.decodes += 1
                pending = (request, now + cost(request), decode(request))

    frame = int(FRAME_S * SAMPLE_RATE)
    fed = 0
    while fed < len(audio):
        chunk = audio[fed : fed + frame]
        scored = fed // VAD_CHUNK
        fed += len(chunk)
        policy.feed(chunk, probs[scored : fed // VAD_CHUNK])
        settle(fed / SAMPLE_RATE)
    now = fed / SAMPLE_RATE
    policy.finish()
    collect(now)
    while True:
        if pending is not None:
            now = max(now, pending[1])
        settle(now)
        if pending is None:
            collect(now)
            return out


# --------------------------------------------------------------------------- the command


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    from whisperwire.bench.arguments import _also, add_cache_argument

    parser.add_argument(
        "--server-args",
        default="",
        help='`serve` flags of the policy replayed, e.g. "--trim-context 5" (default: none)',
    )
    parser.add_argument(
        "--also",
        type=_also,
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="another policy replayed on the same audio, as `serve` flags; repeatable",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--long-seconds",
        type=float,
        default=None,
        help="replay the long-form file's first S seconds (default: all 13.3 minutes)",
    )
    what.add_argument(
        "--clips", type=int, default=None, help="replay this many test-other clips instead"
    )
    parser.add_argument("--audio", type=Path, default=None, help="the shared test-audio folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the results (with transcripts) here, JSON"
    )
    parser.add_argument(
        "--cost-scale",
        type=float,
        default=1.0,
        help="decodes take this times the fitted cost model's virtual seconds (a faster "
        "machine or decode: below 1; default 1)",
    )
    parser.add_argument(
        "--cost-jitter",
        type=float,
        default=0.0,
        help="each decode takes up to this share more or less than the cost model says, at "
        "random (0.3: 0.7-1.3x), as on a live machine; reproducible by --seed (default 0)",
    )
    parser.add_argument(
        "--seed",
        type=_seeds,
        default=(0,),
        help="the jitter's seed: one seed, one live-like run; several (1,2,3): a run for "
        "each, and the median of their figures (default 0)",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="replays run at once, one core each, with several seeds (default: a core each)",
    )
    add_cache_argument(parser)


@dataclass
class _Variant:
    name: str
    flags: tuple[str, ...]
    policy: PolicyConfig
    language: str  # as `serve` takes it: a code, or "auto"
    model: str | None
    engine: dict[str, Any]  # EngineOptions fields the flags set


def _variant(name: str, flags: Sequence[str]) -> _Variant:
    from whisperwire.cli import build_parser, decoding_options, settings_from_args

    args = build_parser("serve").parse_args(["serve", *flags])
    settings = settings_from_args(args)
    engine = decoding_options(settings)
    model = settings.checkpoint or settings.model
    return _Variant(name, tuple(flags), settings.policy, settings.language, model, engine)


def _recordings(args: argparse.Namespace) -> list[Any]:
    from whisperwire.bench.corpus import (
        check_root,
        default_audio_root,
        librispeech_clips,
        long_clip,
    )

    root = args.audio or default_audio_root()
    check_root(root)
    if args.clips is not None:
        return librispeech_clips(root)[: args.clips]
    return [long_clip(root, args.long_seconds)]


def _figures(
    clips: Sequence[Any],
    durations: Sequence[float],
    runs: Sequence[Replayed],
    offline: Sequence[Any],
    cost: DecodeCost,
) -> dict[str, Any]:
    """The figures of `runs`, one per clip, against the clips' offline results (`offline`)."""
    from whisperwire.bench import metrics as M
    from whisperwire.bench.scenarios.common import rounded

    refs = [c.reference for c in clips]
    lags: list[M.WordLag] = []
    total = 0
    for reference, run in zip(offline, runs, strict=True):
        some, n = M.word_lags(reference.words, M.timeline(run.messages), lambda t: t)
        lags += some
        total += n
    wer = M.wer(refs, [r.text for r in runs])
    wer_offline = M.wer(refs, [reference.text for reference in offline])
    figures: dict[str, Any] = {
        "wer": rounded(wer, 4),
        "wer_offline": rounded(wer_offline, 4),
        "wer_ratio": rounded(wer / wer_offline, 3) if wer is not None and wer_offline else None,
        "latency": M.latency_block(lags, total),
        "decodes": sum(r.decodes for r in runs),
        "cost_model": asdict(cost),
    }
    if len(clips) == 1:
        _, first, last = M.edge_windows(lags, durations[0], WINDOW_S)
        figures["latency_first_window"], figures["latency_last_window"] = first, last
    return figures


def _seeds(text: str) -> tuple[int, ...]:
    """`--seed`: one seed, or several separated by commas."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seed or a list of seeds: {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is given twice: {text!r}")
    return seeds


def _jobs(text: str) -> int:
    """`--jobs`: how many replays run at once, 1 or more."""
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of jobs: {text!r}") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"give 1 job or more (got {jobs})")
    return jobs


@dataclass(frozen=True)
class _Inputs:
    """What every replay of a run shares: the recordings, their audio and VAD, their offline
    results and the cost model."""

    clips: list[Any]
    audio: list[np.ndarray]
    probs: list[np.ndarray]
    offline: list[Any]
    cost: DecodeCost
    jitter: float


def run_replay(args: argparse.Namespace) -> int:
    from whisperwire.bench.corpus import OfflineReference, load
    from whisperwire.bench.inputs import default_cache
    from whisperwire.vad import StreamingVad

    if len(args.seed) > 1 and args.cost_jitter <= 0:
        raise SystemExit("replay: several seeds need --cost-jitter: without it they replay alike")
    variants = [_variant("whisperwire", shlex.split(args.server_args))]
    variants += [_variant(name, flags) for name, flags in args.also]
    clips = _recordings(args)
    audio = [load(c.path, c.start, c.end) for c in clips]
    offline = OfflineReference(
        args.cache or default_cache(), beam_size=variants[0].engine["beam_size"]
    )
    references = [offline.get(clip) for clip in clips]
    offline.release()
    base, k = DecodeCost(), args.cost_scale
    inputs = _Inputs(
        clips,
        audio,
        [StreamingVad().process(a) for a in audio],
        references,
        DecodeCost(*(k * value for value in astuple(base))),
        args.cost_jitter,
    )
    results: dict[str, Any] = {
        "recordings": [c.name for c in clips],
        "cost_jitter": args.cost_jitter,
        "seed": args.seed[0] if len(args.seed) == 1 else list(args.seed),
        "variants": {},
    }
    tasks = [(v, seed) for v in variants for seed in args.seed]
    done = _each(tasks, inputs, args.jobs)
    for v in variants:
        runs = {seed: figures for (w, seed), figures in zip(tasks, done, strict=True) if w is v}
        if len(runs) == 1:
            results["variants"][v.name] = figures = next(iter(runs.values()))
        else:
            for seed, figures in runs.items():
                print(_line(f"{v.name} (seed {seed})", figures), flush=True)
            results["variants"][v.name] = figures = _medians(runs)
        print(_line(v.name, figures), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


def _each(tasks: list[tuple[_Variant, int]], inputs: _Inputs, jobs: int | None) -> list[Any]:
    """The figures of each (variant, seed): in this process when there is one task or one
    job, else in that many worker processes (each replay decodes on one thread)."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = min(len(tasks), jobs or os.cpu_count() or 1)
    if jobs <= 1:
        return [_replay_variant(v, seed, inputs) for v, seed in tasks]
    # spawned, not forked: the parent has run the VAD's threads
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_replay_variant, *zip(*tasks, strict=True), [inputs] * len(tasks)))


def _replay_variant(v: _Variant, seed: int, inputs: _Inputs) -> dict[str, Any]:
    """One variant replayed on every recording with the jitter of `seed`: its figures."""
    from whisperwire.engine import Engine, EngineOptions, resolve_model

    started = time.perf_counter()
    engine = Engine(resolve_model(v.model), EngineOptions(threads=1, workers=1, **v.engine))
    # as the server does: an English-only model transcribes English; "auto": detect
    language = None if v.language == "auto" else v.language
    language = language if engine.multilingual else "en"
    costs = partial(inputs.cost, greedy_partials=v.engine["partial_beam_size"] == 1)
    runs = [
        replay(Policy(v.policy, language), a, p, engine.decode, _jittered(costs, inputs, seed, i))
        for i, (a, p) in enumerate(zip(inputs.audio, inputs.probs, strict=True))
    ]
    durations = [len(a) / SAMPLE_RATE for a in inputs.audio]
    figures = _figures(inputs.clips, durations, runs, inputs.offline, inputs.cost)
    figures["flags"] = list(v.flags)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    figures["texts"] = [r.text for r in runs]
    return figures


def _medians(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figures of a variant replayed with several seeds: the median WER and final and
    first-seen lags over the seeds, the WER's range, and every run's figures by seed."""
    from whisperwire.bench.scenarios.common import rounded

    every = list(runs.values())

    def median(get: Callable[[dict[str, Any]], Any]) -> Any:
        values = [get(f) for f in every]
        return None if None in values else rounded(float(np.median(values)), 4)

    wers = [f["wer"] for f in every]
    latency = {
        kind: {p: median(lambda f, k=kind, q=p: f["latency"][k][q]) for p in ("p50", "p95")}
        for kind in ("final", "first_seen")
    }
    return {
        "wer": median(lambda f: f["wer"]),
        "wer_range": [min(wers), max(wers)] if None not in wers else None,
        "wer_offline": every[0]["wer_offline"],
        "wer_ratio": median(lambda f: f["wer_ratio"]),
        "latency": latency,
        "decodes": median(lambda f: f["decodes"]),
        "flags": every[0]["flags"],
        "by_seed": {str(seed): f for seed, f in runs.items()},
    }


def _jittered(
    cost: Callable[[DecodeRequest], float], inputs: _Inputs, seed: int, recording: int
) -> Callable[[DecodeRequest], float]:
    """The cost model of one recording: jittered by its own generator (the same draws for
    every variant, whatever the other recordings asked for), or as it is."""
    if inputs.jitter <= 0:
        return cost
    return Jittered(cost, inputs.jitter, np.random.default_rng((seed, recording)))


def _line(name: str, f: dict[str, Any]) -> str:
    final, first = f["latency"]["final"], f["latency"]["first_seen"]
    spread = (
        f" (seeds {f['wer_range'][0]:.2%}-{f['wer_range'][1]:.2%})" if f.get("wer_range") else ""
    )
    return (
        f"{name}: WER {f['wer']:.2%}{spread} (offline {f['wer_offline']:.2%}, {f['wer_ratio']}x), "
        f"final lag p50 {final['p50']} s p95 {final['p95']} s, first seen p50 {first['p50']} s, "
        f"{f['decodes']} decodes ({' '.join(f['flags']) or 'defaults'})"
    )
