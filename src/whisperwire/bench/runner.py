"""The benchmark's command line and its scenarios: costs, accuracy, capacity, long, noise.

`add_bench_arguments(parser)` fills an argparse parser, `run_bench(args)` runs it and returns
an exit status. Every system (whisperwire, any other whisperwire configuration given with
`--also`, and the fixed-window baseline) is measured the same way, scenario by scenario,
alternating, so slow phases of a shared machine hit them all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench.client import FRAME_S, StreamLog, run_streams
from whisperwire.bench.corpus import (
    NOISE_DBFS,
    AudioMissing,
    Clip,
    OfflineReference,
    Piece,
    StreamAudio,
    check_root,
    clip_durations,
    concurrent_streams,
    default_audio_root,
    join_clips,
    librispeech_clips,
    load,
    long_clip,
    noise,
    stream_offline_text,
    stream_words,
)
from whisperwire.bench.servers import (
    CpuWatch,
    RssSampler,
    System,
    baseline_system,
    external_system,
    start_all,
    whisperwire_system,
)

SCENARIOS = ("costs", "accuracy", "noise", "capacity", "long")
NOISES = ("silence", "white", "pink")
DEFAULT_OUT = Path("benchmarks") / "results"


@dataclass(frozen=True)
class Preset:
    clips: int  # librispeech_test_other clips in the accuracy run (one session each)
    n: tuple[int, ...]  # concurrent streams in the capacity run
    stream_s: float  # minimum length of each capacity stream (whole clips joined)
    long_s: float | None  # long-session length; None: the whole 13.3-minute file
    noise_s: float  # length of each silence / noise session
    rss_interval: float  # seconds between RSS samples in the long session
    max_clip_s: float | None = None  # only clips this short (keeps the tiny run short)
    fresh_long: bool = True  # restart the servers for the long session
    cost_repeats: int = 5  # runs of each cost-model figure (the median is kept)


PRESETS = {
    "full": Preset(100, (1, 2, 4, 8, 16), 45.0, None, 60.0, 30.0),
    "quick": Preset(
        3, (1, 2, 4), 10.0, 20.0, 8.0, 5.0, max_clip_s=12.0, fresh_long=False, cost_repeats=2
    ),
    "tiny": Preset(
        2, (1, 2), 5.0, 10.0, 4.0, 3.0, max_clip_s=6.0, fresh_long=False, cost_repeats=1
    ),
}


# --------------------------------------------------------------------------- arguments


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give counts of 1 or more")
    return values


def _also(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, flags = text.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS, got {text!r}")
    if name in ("whisperwire", "baseline"):
        raise argparse.ArgumentTypeError(f"the name {name!r} is taken")
    return name, tuple(shlex.split(flags))


def _scenarios(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [v for v in values if v not in SCENARIOS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SCENARIOS)} (got {text!r})")
    return values


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (for `benchmarks/run.py` and `whisperwire bench`)."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="3 clips, N up to 4, 15 s long-session stand-in (under 5 minutes)",
    )
    mode.add_argument(
        "--tiny",
        action="store_true",
        help="the smallest run that still yields every figure (the test suite's mode)",
    )
    parser.add_argument(
        "--url",
        help="benchmark a running whisperwire at this ws:// URL instead of starting one "
        "(server RSS and CPU figures are then null)",
    )
    parser.add_argument(
        "--server-args",
        default="",
        help='flags for the `whisperwire serve` the harness starts, e.g. "--step 1.0 -bs 1"',
    )
    parser.add_argument(
        "--server-command",
        default=None,
        help="command that runs the server under test, before its flags (default: "
        "`python -m whisperwire serve`); it must accept --host and --port",
    )
    parser.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="beam size for the offline reference and the baseline (default: the -bs in "
        "--server-args, else 5); passed to the started server too",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="the shared test-audio folder (default: $WHISPERWIRE_TEST_AUDIO or ../shared/audio)",
    )
    parser.add_argument("--clips", type=int, default=None, help="clips in the accuracy run")
    parser.add_argument(
        "--n", type=_int_list, default=None, help="concurrent streams, e.g. 1,2,4,8,16"
    )
    parser.add_argument(
        "--stream-seconds", type=float, default=None, help="length of each capacity stream"
    )
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=None,
        help="long-session length (0: the whole 13.3-minute file)",
    )
    parser.add_argument(
        "--noise-seconds", type=float, default=None, help="length of each silence/noise session"
    )
    parser.add_argument(
        "--rss-interval", type=float, default=None, help="seconds between RSS samples"
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=SCENARIOS,
        help=f"which scenarios to run (default: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--skip-long", action="store_true", help="leave out the long session")
    parser.add_argument(
        "--no-baseline", action="store_true", help="measure whisperwire only (no reference)"
    )
    parser.add_argument(
        "--also",
        type=_also,
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="measure another whisperwire beside it, started with other flags, in the same run "
        "(repeatable), e.g. --also 'agreement=--commit agreement --partial-beam-size 5'",
    )
    parser.add_argument(
        "--baseline-window", type=float, default=3.0, help="baseline window, seconds"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="offline-reference cache file (default: ~/.cache/whisperwire/bench-offline.json)",
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="JSON",
        help="re-render the Markdown and plots of an earlier results.json into --out",
    )


@dataclass(frozen=True)
class Plan:
    mode: str
    clips: int
    n: tuple[int, ...]
    stream_s: float
    long_s: float | None
    noise_s: float
    rss_interval: float
    max_clip_s: float | None
    fresh_long: bool
    cost_repeats: int
    scenarios: tuple[str, ...]
    beam_size: int
    threads: int
    server_args: tuple[str, ...]


def _server_flags(server_args: Sequence[str]) -> tuple[int | None, int | None]:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-bs", "--beam-size", type=int)
    flags.add_argument("-t", "--threads", type=int)
    known, _ = flags.parse_known_args(list(server_args))
    return known.beam_size, known.threads


def _with_beam(flags: list[str], plan: Plan) -> list[str]:
    """Another whisperwire's flags, with the run's beam size unless they give their own."""
    return flags if _server_flags(flags)[0] is not None else [*flags, "-bs", str(plan.beam_size)]


def make_plan(args: argparse.Namespace) -> Plan:
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    preset = PRESETS[mode]
    server_args = shlex.split(args.server_args or "")
    beam, threads = _server_flags(server_args)
    if args.beam_size is not None:
        if beam is not None and beam != args.beam_size:
            raise SystemExit("error: --beam-size differs from the -bs in --server-args")
        if beam is None:
            server_args += ["-bs", str(args.beam_size)]
        beam = args.beam_size
    long_s = preset.long_s if args.long_seconds is None else (args.long_seconds or None)
    scenarios = tuple(s for s in args.scenarios if not (args.skip_long and s == "long"))
    custom = any(
        getattr(args, k) is not None
        for k in ("clips", "n", "stream_seconds", "long_seconds", "noise_seconds")
    )
    return Plan(
        mode=f"{mode}+custom" if custom or scenarios != SCENARIOS else mode,
        clips=args.clips if args.clips is not None else preset.clips,
        n=args.n or preset.n,
        stream_s=args.stream_seconds or preset.stream_s,
        long_s=long_s,
        noise_s=args.noise_seconds or preset.noise_s,
        rss_interval=args.rss_interval or preset.rss_interval,
        max_clip_s=preset.max_clip_s,
        fresh_long=preset.fresh_long,
        cost_repeats=preset.cost_repeats,
        scenarios=scenarios,
        beam_size=beam if beam is not None else 5,
        threads=threads or 0,
        server_args=tuple(server_args),
    )


# --------------------------------------------------------------------------- progress


class Progress:
    """Progress over the planned real-time seconds of audio (wall-clock progress): a tqdm bar
    on a terminal, else one line per phase and one every `every` seconds (for CI logs)."""

    def __init__(self, total: float, enabled: bool, every: float = 60.0) -> None:
        self.total = total
        self.done = 0.0
        self.enabled = enabled
        self.every = every
        self._next_line = time.monotonic() + every
        self._started = time.monotonic()
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=round(total, 1),
                    unit="s",
                    desc="bench",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
                    "[{elapsed}<{remaining}]",
                    dynamic_ncols=True,
                )
            except ImportError:
                self.bar = None

    def _line(self, text: str) -> None:
        if self.enabled:
            pct = 100 * self.done / self.total if self.total else 100.0
            elapsed = time.monotonic() - self._started
            print(
                f"[bench {pct:3.0f}% {elapsed / 60:5.1f} min] {text}", file=sys.stderr, flush=True
            )

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)
        else:
            self._line(text)

    def advance(self, seconds: float) -> None:
        seconds = min(seconds, max(0.0, self.total - self.done))  # estimates are not exact
        self.done += seconds
        if self.bar is not None:
            self.bar.update(seconds)
        elif time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + self.every
            self._line(f"{self.done:.0f} of {self.total:.0f} s of audio streamed")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- scenarios


def _server_config(logs: Sequence[StreamLog]) -> dict[str, Any] | None:
    for log in logs:
        if (ready := log.ready) is not None:
            return dict(ready.get("config") or {})
    return None


def _session_errors(logs: Sequence[StreamLog]) -> list[str]:
    out = [f"{log.name}: {log.error}" for log in logs if log.error]
    for log in logs:
        out += [f"{log.name}: {e.get('code')}: {e.get('message')}" for e in log.errors]
    return out


def _lags_of(
    log: StreamLog, stream: StreamAudio, offline: OfflineReference
) -> tuple[M.Timeline, list[M.WordLag], int]:
    line = M.timeline(log.messages)
    lags, ref_tokens = M.word_lags(stream_words(stream, offline), line, log.sent_time)
    return line, lags, ref_tokens


def run_accuracy(
    system: System, streams: Sequence[StreamAudio], offline: OfflineReference, progress: Progress
) -> dict[str, Any]:
    assert system.url is not None
    logs: list[StreamLog] = []
    for stream in streams:
        logs += run_streams(system.url, [(stream.name, stream.samples)], on_frame=progress.advance)
    all_lags: list[M.WordLag] = []
    ref_tokens = 0
    to_first: list[float] = []
    to_first_after_word: list[float] = []
    for log, stream in zip(logs, streams, strict=True):
        line, lags, n = _lags_of(log, stream, offline)
        all_lags += lags
        ref_tokens += n
        words = stream_words(stream, offline)
        if line.first_text_at is not None and log.first_sent_at is not None:
            to_first.append(line.first_text_at - log.first_sent_at)
            if words:
                to_first_after_word.append(line.first_text_at - log.sent_time(words[0][2]))
    refs = [s.reference or "" for s in streams]
    wer_stream = M.wer(refs, [log.text for log in logs])
    wer_offline = M.wer(refs, [stream_offline_text(s, offline) for s in streams])
    return {
        "sessions": len(logs),
        "audio_s": round(sum(s.duration for s in streams), 1),
        "wer_stream": _r(wer_stream, 4),
        "wer_offline": _r(wer_offline, 4),
        "wer_ratio": _r(wer_stream / wer_offline, 3)
        if wer_stream is not None and wer_offline
        else None,
        "latency": M.latency_block(all_lags, ref_tokens),
        "time_to_first_text": M.summary(to_first),
        "first_text_after_first_word": M.summary(to_first_after_word),
        "drain": M.summary([d for log in logs if (d := log.drain) is not None]),
        "session_errors": _session_errors(logs),
        "server_config": _server_config(logs),
        "lags": {
            "first_seen": [round(w.first, 3) for w in all_lags],
            "final": [round(w.final, 3) for w in all_lags],
        },
        "transcripts": [
            {
                "clip": s.name,
                "reference": s.reference,
                "offline": stream_offline_text(s, offline),
                "stream": log.text,
            }
            for s, log in zip(streams, logs, strict=True)
        ],
    }


def run_capacity(
    system: System,
    streams_by_n: dict[int, list[StreamAudio]],
    offline: OfflineReference,
    progress: Progress,
) -> list[dict[str, Any]]:
    assert system.url is not None
    rows = []
    for n, streams in streams_by_n.items():
        progress.phase(f"{system.name}: capacity N={n}")
        cpu0, t0 = system.cpu_seconds(), time.monotonic()
        logs = run_streams(
            system.url,
            [(s.name, s.samples) for s in streams],
            stagger_s=1.0 / n,
            drain_timeout=1200,  # a server far behind may need minutes to catch up
            on_frame=progress.advance,
        )
        cpu1, wall = system.cpu_seconds(), time.monotonic() - t0
        # Streams refused at connect (admission control) are counted, not measured.
        refused = sum(log.refused for log in logs)
        pairs = [(log, s) for log, s in zip(logs, streams, strict=True) if not log.refused]
        logs, streams = [log for log, _ in pairs], [s for _, s in pairs]
        audio_s = sum(s.duration for s in streams)
        all_lags: list[M.WordLag] = []
        ref_tokens = 0
        for log, stream in zip(logs, streams, strict=True):
            _, lags, count = _lags_of(log, stream, offline)
            all_lags += lags
            ref_tokens += count
        slope = M.lag_slope(all_lags)
        errors = _session_errors(logs)
        block = M.latency_block(all_lags, ref_tokens)
        drains = [d for log in logs if (d := log.drain) is not None]
        cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        rows.append(
            {
                "n": n,
                "admitted": n - refused,
                "refused": refused,
                "audio_s": round(audio_s, 1),
                "stream_s": [round(s.duration, 1) for s in streams],
                "wall_s": round(wall, 1),
                "latency": block,
                "lag_slope": slope,
                "drain": M.summary(drains),
                "realtime_kept": slope is not None and slope <= 0.05 and not errors,
                "cpu_s": _r(cpu, 2),
                "cpu_per_audio_s": _r(cpu / audio_s, 3) if cpu is not None and audio_s else None,
                "wer_stream": _r(
                    M.wer([s.reference or "" for s in streams], [log.text for log in logs]), 4
                ),
                "wer_offline": _r(
                    M.wer(
                        [s.reference or "" for s in streams],
                        [stream_offline_text(s, offline) for s in streams],
                    ),
                    4,
                ),
                "session_errors": errors,
            }
        )
    return rows


def run_long(
    system: System,
    stream: StreamAudio,
    offline: OfflineReference,
    interval: float,
    progress: Progress,
) -> dict[str, Any]:
    assert system.url is not None
    cpu0 = system.cpu_seconds()
    with RssSampler(system, interval) as sampler:
        (log,) = run_streams(
            system.url, [(stream.name, stream.samples)], drain_timeout=600,
            on_frame=progress.advance,
        )  # fmt: skip
    cpu1 = system.cpu_seconds()
    _, lags, ref_tokens = _lags_of(log, stream, offline)
    minute = min(60.0, stream.duration / 2)
    first = [w for w in lags if w.end < minute]
    last = [w for w in lags if w.end >= stream.duration - minute]
    rss = sampler.samples
    growth = steady = None
    if len(rss) >= 2:
        growth = round(rss[-1][1] - rss[0][1], 1)
        settle = [mb for t, mb in rss if t >= min(60.0, rss[-1][0] / 2)]
        steady = round(rss[-1][1] - settle[0], 1) if settle else None
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    trend = M.slope([(t, mb) for t, mb in rss if t >= 60.0])
    return {
        "audio_s": round(stream.duration, 1),
        "clip": stream.name,
        "text": log.text,
        "wer_stream": _r(M.wer([stream.reference or ""], [log.text]), 4),
        "wer_offline": _r(
            M.wer([stream.reference or ""], [stream_offline_text(stream, offline)]), 4
        ),
        "latency": M.latency_block(lags, ref_tokens),
        "window_s": round(minute, 1),
        "latency_first_window": M.latency_block(first, len(first)),
        "latency_last_window": M.latency_block(last, len(last)),
        "rss_mb": [[t, mb] for t, mb in rss],
        "rss_interval_s": interval,
        "rss_growth_mb": growth,
        "rss_growth_after_first_minute_mb": steady,
        "rss_slope_after_first_minute_mb_per_min": _r(trend * 60, 2) if trend is not None else None,
        "rss_max_mb": max((mb for _, mb in rss), default=None),
        "cpu_per_audio_s": _r(cpu / stream.duration, 3) if cpu is not None else None,
        "drain_s": _r(log.drain, 3),
        "session_errors": _session_errors([log]),
    }


def run_noise(system: System, streams: Sequence[StreamAudio], progress: Progress) -> dict[str, Any]:
    assert system.url is not None
    logs = run_streams(
        system.url, [(s.name, s.samples) for s in streams], on_frame=progress.advance
    )
    # A server whose admission control counts every connection as a possible speaker may
    # refuse some of the three at once: those run again, one at a time.
    for i, log in enumerate(logs):
        if log.refused:
            logs[i] = run_streams(system.url, [(streams[i].name, streams[i].samples)])[0]
    out: dict[str, Any] = {}
    for log, stream in zip(logs, streams, strict=True):
        partial_words = [
            len(M.tokens(str(m.get("text") or "")))
            for _, m in log.messages
            if m.get("type") == "partial"
        ]
        out[stream.name] = {
            "audio_s": round(stream.duration, 1),
            "final_words": len(M.tokens(log.text)),
            "text": log.text[:300],
            "partials_with_text": sum(1 for n in partial_words if n),
            "max_partial_words": max(partial_words, default=0),
            "session_errors": _session_errors([log]),
        }
    return out


def run_costs(root: Path, plan: Plan) -> dict[str, Any]:
    """The cost model (`bench.costs`) of the bundled model on the long-form file's first 30 s."""
    from whisperwire.bench.costs import measure_costs
    from whisperwire.engine import bundled_model_path

    clip = long_clip(root, None)
    audio = load(clip.path, 0.0, 30.0)
    costs = measure_costs(str(bundled_model_path()), audio, repeats=plan.cost_repeats)
    costs["model"] = "tiny.en (bundled)"
    return costs


def _r(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


# --------------------------------------------------------------------------- the run


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisperwire" / "bench-offline.json"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for package in ("faster-whisper", "ctranslate2", "onnxruntime", "whisperwire"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    try:
        repo = Path(__file__).resolve().parents[3]
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
        info["git_commit"] = (commit + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark described by `args` (see `add_bench_arguments`); exit status."""
    from whisperwire.bench import report

    out: Path = args.out
    if args.report_only is not None:
        results = json.loads(Path(args.report_only).read_text(encoding="utf-8"))
        report.write_all(results, out, plots=not args.no_plots)
        print(f"report written to {out}")
        return 0
    plan = make_plan(args)
    root = args.audio or default_audio_root()
    try:
        check_root(root)
    except AudioMissing as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    tmp = out / "tmp"
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    t_start = time.monotonic()
    load_start = _load()

    # The audio of every session, and the offline reference for all of it.
    order = librispeech_clips(root)
    if plan.max_clip_s is not None:
        durations = clip_durations(order)
        order = [c for c in order if durations[c.name] <= plan.max_clip_s]
    accuracy = [join_clips(c.name, [c]) for c in order[: plan.clips]]
    capacity = {n: concurrent_streams(order, n, plan.stream_s) for n in plan.n}
    long_stream: StreamAudio | None = None
    if "long" in plan.scenarios:
        clip = long_clip(root, plan.long_s)
        long_stream = StreamAudio(
            clip.name, load(clip.path, clip.start, clip.end), [Piece(clip, 0)]
        )
    noises = [
        StreamAudio(kind, noise(kind, plan.noise_s)) for kind in NOISES
    ] if "noise" in plan.scenarios else []  # fmt: skip

    cache = args.cache or _default_cache()
    offline = OfflineReference(cache, plan.beam_size, threads=plan.threads)
    needed: dict[str, Clip] = {}
    if "accuracy" in plan.scenarios:
        needed.update({p.clip.key: p.clip for s in accuracy for p in s.pieces})
    if "capacity" in plan.scenarios:
        needed.update(
            {p.clip.key: p.clip for ss in capacity.values() for s in ss for p in s.pieces}
        )
    if long_stream is not None:
        needed.update({p.clip.key: p.clip for p in long_stream.pieces})
    todo = [c for c in needed.values() if not offline.cached(c)]
    show = not args.no_progress
    if todo:
        print(
            f"[bench] offline reference: {len(todo)} clips through faster-whisper", file=sys.stderr
        )
        iterator: Any = todo
        if show:
            try:
                from tqdm import tqdm

                iterator = tqdm(todo, desc="offline", unit="clip")
            except ImportError:
                pass
        for clip in iterator:
            offline.get(clip)
    offline.release()

    systems: list[System] = []
    log_dir = tmp / "logs"
    if args.url:
        systems.append(external_system("whisperwire", args.url))
    else:
        command = shlex.split(args.server_command) if args.server_command else None
        systems.append(whisperwire_system(list(plan.server_args), log_dir, command))
        for name, flags in args.also:
            if any(system.name == name for system in systems):
                raise SystemExit(f"bench: error: --also {name}: the name is given twice")
            flags_of = _with_beam(list(flags), plan)
            systems.append(whisperwire_system(flags_of, log_dir, command, name))
    if not args.no_baseline:
        systems.append(baseline_system(plan.beam_size, plan.threads, log_dir))
        systems[-1].command += ["--window", str(args.baseline_window)]  # type: ignore[operator]

    per_system = 0.0
    if "accuracy" in plan.scenarios:
        per_system += sum(s.duration for s in accuracy)
    if "noise" in plan.scenarios:
        per_system += plan.noise_s
    if "capacity" in plan.scenarios:
        per_system += sum(max(s.duration for s in ss) for ss in capacity.values())
    if long_stream is not None:
        per_system += long_stream.duration
    progress = Progress(per_system * len(systems), enabled=show)

    results: dict[str, Any] = {
        "schema": 1,
        "mode": plan.mode,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            **asdict(plan),
            "audio_root": str(root),
            "frame_s": FRAME_S,
            "pcm": "16 kHz mono s16le, real time (100 ms frames on a wall-clock schedule)",
            "noise_dbfs": NOISE_DBFS,
            "baseline_window_s": None if args.no_baseline else args.baseline_window,
            "capacity_stagger": "stream i of N starts i/N seconds after stream 0",
            "accuracy_clips": [s.name for s in accuracy],
        },
        "definitions": M.DEFINITIONS,
        "systems": {s.name: {"server": {}} for s in systems},
    }
    failures: list[str] = []
    if "costs" in plan.scenarios:  # in-process, before any server competes for the cores
        progress.phase("cost model")
        results["costs"] = run_costs(root, plan)
    try:
        progress.phase("starting the servers")
        start_all(systems)
        for system in systems:
            results["systems"][system.name]["server"] = system.describe()
        for scenario in ("accuracy", "noise", "capacity", "long"):
            if scenario not in plan.scenarios:
                continue
            if scenario == "long" and plan.fresh_long and any(s.command for s in systems):
                # Fresh servers: RSS over time is the long session's alone.
                progress.phase("restarting the servers")
                for system in systems:
                    system.stop()
                start_all(systems)
            for system in systems:
                progress.phase(f"{system.name}: {scenario}")
                t0 = time.monotonic()
                watch = CpuWatch(system.pid)
                try:
                    if scenario == "accuracy":
                        value: Any = run_accuracy(system, accuracy, offline, progress)
                    elif scenario == "noise":
                        value = run_noise(system, noises, progress)
                    elif scenario == "capacity":
                        value = run_capacity(system, capacity, offline, progress)
                    else:
                        assert long_stream is not None
                        value = run_long(system, long_stream, offline, plan.rss_interval, progress)
                except Exception as exc:  # noqa: BLE001 - record it, measure the rest
                    failures.append(f"{system.name} {scenario}: {type(exc).__name__}: {exc}")
                    value = {"error": failures[-1]}
                results["systems"][system.name][scenario] = value
                server = results["systems"][system.name]["server"]
                server.setdefault("wall_s", {})[scenario] = round(time.monotonic() - t0, 1)
                server.setdefault("cpu_share", {})[scenario] = watch.result()
    finally:
        progress.close()
        for system in systems:
            system.stop()
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    results["machine"]["load_average_start"] = load_start
    results["machine"]["load_average_end"] = _load()
    results["goals"] = report.goals(results)
    results["failures"] = failures
    report.write_all(results, out, plots=not args.no_plots)
    print(report.console_summary(results, out))
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark whisperwire: accuracy, latency, capacity, long session, "
        "hallucination, each beside a fixed-window baseline.",
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))
