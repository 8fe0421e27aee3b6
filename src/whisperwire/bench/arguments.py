"""The benchmark's command line: its flags, the presets, and the plan they make.

Imports nothing heavy: `whisperwire`'s CLI builds its `bench` parser from this module.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = ("costs", "accuracy", "noise", "capacity", "long")  # the default run
OPTIONAL = ("soak",)  # only when asked for: an hour of the machine
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
    unknown = [v for v in values if v not in SCENARIOS + OPTIONAL]
    if unknown or not values:
        known = ",".join(SCENARIOS + OPTIONAL)
        raise argparse.ArgumentTypeError(f"choose from {known} (got {text!r})")
    return values


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    """`--cache`: where the offline reference is kept (the bench's and the replay's)."""
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="offline-reference cache file (default: ~/.cache/whisperwire/bench-offline.json)",
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (for `benchmarks/run.py` and `whisperwire bench`)."""
    _add_system_arguments(parser)
    _add_size_arguments(parser)
    _add_output_arguments(parser)


def _add_system_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's size preset and the server under test."""
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


def _add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """Where results and audio are, and how much of each scenario runs."""
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
        help=f"which scenarios to run (default: {','.join(SCENARIOS)}; also: {','.join(OPTIONAL)})",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=60.0,
        help="soak: length of the long session (default: %(default)s)",
    )
    parser.add_argument(
        "--soak-every",
        type=float,
        default=60.0,
        help="soak: seconds between the short sessions beside it (default: %(default)s)",
    )
    parser.add_argument("--skip-long", action="store_true", help="leave out the long session")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The systems measured beside it, and what the run writes."""
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
    add_cache_argument(parser)
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
    soak_s: float
    soak_every_s: float
    beam_size: int
    threads: int
    server_args: tuple[str, ...]


def _server_flags(server_args: Sequence[str]) -> tuple[int | None, int | None]:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-bs", "--beam-size", type=int)
    flags.add_argument("-t", "--threads", type=int)
    known, _ = flags.parse_known_args(list(server_args))
    return known.beam_size, known.threads


def with_beam(flags: list[str], plan: Plan) -> list[str]:
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
        soak_s=args.soak_minutes * 60,
        soak_every_s=args.soak_every,
        beam_size=beam if beam is not None else 5,
        threads=threads or 0,
        server_args=tuple(server_args),
    )
