"""One benchmark run: every system measured the same way, scenario by scenario, alternating
(so slow phases of a shared machine hit them all), into one results dict."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisperwire.bench import metrics as M
from whisperwire.bench import report
from whisperwire.bench.arguments import Plan, make_plan, with_beam
from whisperwire.bench.client import FRAME_S
from whisperwire.bench.corpus import (
    NOISE_DBFS,
    AudioMissing,
    OfflineReference,
    check_root,
    default_audio_root,
)
from whisperwire.bench.goals import goals
from whisperwire.bench.inputs import Inputs, offline_reference, prepare_inputs
from whisperwire.bench.machine import load_average, machine_info
from whisperwire.bench.progress import Progress
from whisperwire.bench.scenarios.accuracy import run_accuracy
from whisperwire.bench.scenarios.capacity import run_capacity
from whisperwire.bench.scenarios.cost_model import run_costs
from whisperwire.bench.scenarios.long_session import run_long
from whisperwire.bench.scenarios.noise import run_noise
from whisperwire.bench.scenarios.soak import run_soak
from whisperwire.bench.servers import (
    CpuWatch,
    System,
    baseline_system,
    external_system,
    start_all,
    whisperwire_system,
)

SERVER_SCENARIOS = ("accuracy", "noise", "capacity", "long", "soak")  # in the order they run


def make_systems(args: argparse.Namespace, plan: Plan, log_dir: Path) -> list[System]:
    """whisperwire (started, or the --url), each --also configuration, and the baseline."""
    systems: list[System] = []
    if args.url:
        systems.append(external_system("whisperwire", args.url))
    else:
        command = shlex.split(args.server_command) if args.server_command else None
        systems.append(whisperwire_system(list(plan.server_args), log_dir, command))
        for name, flags in args.also:
            if any(system.name == name for system in systems):
                raise SystemExit(f"bench: error: --also {name}: the name is given twice")
            systems.append(whisperwire_system(with_beam(list(flags), plan), log_dir, command, name))
    if not args.no_baseline:
        systems.append(baseline_system(plan.beam_size, plan.threads, log_dir))
        systems[-1].command += ["--window", str(args.baseline_window)]  # type: ignore[operator]
    return systems


def results_header(
    args: argparse.Namespace,
    plan: Plan,
    root: Path,
    inputs: Inputs,
    systems: list[System],
    started: datetime,
) -> dict[str, Any]:
    """What the results say before anything is measured: the run, the machine, settings."""
    return {
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
            "accuracy_clips": [s.name for s in inputs.accuracy],
        },
        "definitions": M.DEFINITIONS,
        "systems": {s.name: {"server": {}} for s in systems},
    }


def measure(
    system: System,
    scenario: str,
    inputs: Inputs,
    offline: OfflineReference,
    plan: Plan,
    progress: Progress,
) -> Any:
    """One scenario's figures for one system."""
    if scenario == "accuracy":
        return run_accuracy(system, inputs.accuracy, offline, progress)
    if scenario == "noise":
        return run_noise(system, inputs.noises, progress)
    if scenario == "capacity":
        return run_capacity(system, inputs.capacity, offline, progress)
    if scenario == "soak":
        assert inputs.soak is not None
        shorts, every = inputs.soak_shorts, plan.soak_every_s
        return run_soak(system, inputs.soak, shorts, offline, every, plan.rss_interval, progress)
    assert scenario == "long" and inputs.long is not None
    return run_long(system, inputs.long, offline, plan.rss_interval, progress)


def run_scenarios(
    systems: list[System],
    inputs: Inputs,
    offline: OfflineReference,
    plan: Plan,
    progress: Progress,
    results: dict[str, Any],
) -> list[str]:
    """Start the servers, run the planned scenarios on each in turn, stop them; the
    failures (a failed scenario is recorded and the rest still run)."""
    failures: list[str] = []
    try:
        progress.phase("starting the servers")
        start_all(systems)
        for system in systems:
            results["systems"][system.name]["server"] = system.describe()
        for scenario in (s for s in SERVER_SCENARIOS if s in plan.scenarios):
            if scenario in ("long", "soak") and plan.fresh_long and any(s.command for s in systems):
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
                    value = measure(system, scenario, inputs, offline, plan, progress)
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
    return failures


def run_planned(args: argparse.Namespace) -> int:
    """Run the benchmark `args` describe; write its results; exit status."""
    out: Path = args.out
    plan = make_plan(args)
    root = args.audio or default_audio_root()
    try:
        check_root(root)
    except AudioMissing as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    t_start = time.monotonic()
    load_start = load_average()
    inputs = prepare_inputs(root, plan)
    show = not args.no_progress
    offline = offline_reference(inputs, plan, args.cache, show)
    systems = make_systems(args, plan, out / "tmp" / "logs")
    progress = Progress(inputs.seconds(plan) * len(systems), enabled=show)
    results = results_header(args, plan, root, inputs, systems, started)
    if "costs" in plan.scenarios:  # in-process, before any server competes for the cores
        progress.phase("cost model")
        results["costs"] = run_costs(root, plan.cost_repeats)
    failures = run_scenarios(systems, inputs, offline, plan, progress, results)
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    results["machine"]["load_average_start"] = load_start
    results["machine"]["load_average_end"] = load_average()
    results["goals"] = goals(results)
    results["failures"] = failures
    report.write_all(results, out, plots=not args.no_plots)
    print(report.console_summary(results, out))
    return 1 if failures else 0
