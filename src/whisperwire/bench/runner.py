"""The benchmark's entry points: costs, accuracy, noise, capacity and long-session scenarios.

`add_bench_arguments(parser)` (defined in `arguments`) fills an argparse parser,
`run_bench(args)` runs it and returns an exit status, `main` is `benchmarks/run.py`. Every
system (whisperwire, any other whisperwire configuration given with `--also`, and the
fixed-window baseline) is measured the same way, scenario by scenario, alternating
(`measure`), so slow phases of a shared machine hit them all.

This module imports nothing heavy: the run's modules (numpy, the model) load in `run_bench`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from whisperwire.bench.arguments import add_bench_arguments

__all__ = ["add_bench_arguments", "main", "run_bench"]


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark described by `args` (see `add_bench_arguments`); exit status."""
    if args.report_only is not None:
        from whisperwire.bench import report

        results = json.loads(Path(args.report_only).read_text(encoding="utf-8"))
        report.write_all(results, args.out, plots=not args.no_plots)
        print(f"report written to {args.out}")
        return 0
    from whisperwire.bench.measure import run_planned

    return run_planned(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark whisperwire: accuracy, latency, capacity, long session, "
        "hallucination, each beside a fixed-window baseline.",
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))
