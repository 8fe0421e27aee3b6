"""results.md: the Markdown report of a results dict, section by section."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisperwire.bench import costs as bench_costs
from whisperwire.bench.corpus import NOISES
from whisperwire.bench.goals import max_realtime_streams, p95_bound
from whisperwire.bench.results import get, rows


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _s(x: Any) -> str:
    return "–" if x is None else f"{x:.2f} s"


def _num(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _lags(block: Any, key: str) -> str:
    b = get(block, key) or {}
    if not b.get("n"):
        return "–"
    return f"{b['p50']:.2f} / {b['p95']:.2f} / {b['max']:.2f} s"


def mark(met: Any) -> str:
    """A goal's verdict: yes, **no**, or a dash when it was not judged."""
    return "–" if met is None else ("yes" if met else "**no**")


def _rss(long: dict[str, Any]) -> str:
    samples = long.get("rss_mb") or []
    if not samples:
        return "–"
    steady = long.get("rss_growth_after_first_minute_mb")
    after = f"; {steady:+.0f} after the first minute" if steady is not None else ""
    slope = long.get("rss_slope_after_first_minute_mb_per_min")
    after += f"; trend {slope:+.1f} MiB/min" if slope is not None else ""
    return (
        f"{samples[0][1]:.0f} → {samples[-1][1]:.0f} MiB ({long.get('rss_growth_mb'):+.0f}{after})"
    )


# --------------------------------------------------------------------------- plots


def markdown(results: dict[str, Any], plots: Sequence[str] = ()) -> str:
    systems: dict[str, Any] = results.get("systems", {})
    names = list(systems)
    lines = _header(results, names)
    lines += _summary(results, names)
    lines += _goals(results)
    lines += _capacity(results, names)
    lines += _hallucination(results, names)
    lines += _long_session(systems, names)
    lines += _soak(systems, names)
    lines += _cpu_use(systems, names)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    lines += ["", "## Definitions", ""]
    for key, text in results.get("definitions", {}).items():
        lines.append(f"- **{key}**: {text}")
    lines.append("")
    return "\n".join(lines)


def _header(results: dict[str, Any], names: list[str]) -> list[str]:
    systems: dict[str, Any] = results.get("systems", {})
    m = results.get("machine", {})
    st = results.get("settings", {})
    lines = [
        f"# whisperwire benchmark ({results.get('mode')})",
        "",
        f"Run {results.get('started')} for {_num((results.get('wall_s') or 0) / 60, 1)} min on "
        f"{m.get('cpu', 'an unknown CPU')} ({m.get('cores')} cores, {m.get('memory_gb')} GB), "
        f"load average {m.get('load_average_start')} at start, {m.get('load_average_end')} at "
        f"end (a shared machine: figures are noisy). whisperwire {m.get('whisperwire')} "
        f"(commit {m.get('git_commit')}), faster-whisper {m.get('faster-whisper')}, "
        f"ctranslate2 {m.get('ctranslate2')}.",
        "",
        f"Command: `{results.get('command')}`",
        "",
    ]
    for name in names:
        server = get(systems, name, "server", "command") or get(systems, name, "server", "url")
        lines.append(f"- **{name}**: `{server}`")
    setup = (
        f"Beam size {st.get('beam_size')}, model tiny.en (bundled), int8. Audio is streamed as "
        f"{st.get('pcm')}."
    )
    if st.get("baseline_window_s") is not None:  # None: run with --no-baseline
        setup += (
            f" The baseline decodes fixed {st['baseline_window_s']} s windows with no overlap, "
            "no VAD and no partials (what the whisper.cpp `stream` seed does), behind the same "
            "WebSocket protocol."
        )
    return [*lines, "", setup]


class _SummaryTable:
    """The summary's rows: a figure for each system, and the goal that judges it."""

    def __init__(self, results: dict[str, Any], names: list[str]) -> None:
        self.goals = {g["goal"]: g for g in results.get("goals", [])}
        self.lines = [
            "",
            "## Summary",
            "",
            "| figure | " + " | ".join(names) + " | goal | met |",
            "|---|" + "---|" * len(names) + "---|---|",
        ]

    def row(self, label: str, values: list[str], goal: str | None = None) -> None:
        g = self.goals.get(goal or "", {})
        self.lines.append(
            f"| {label} | " + " | ".join(values) + f" | {g.get('target', '')} | "
            f"{mark(g.get('met')) if g else ''} |"
        )


def _summary(results: dict[str, Any], names: list[str]) -> list[str]:
    systems: dict[str, Any] = results.get("systems", {})
    table = _SummaryTable(results, names)
    _accuracy_rows(table, systems, names)
    bound = p95_bound(results) or 2.0
    table.row(
        f"real-time streams at final lag p95 <= {bound:.2f} s (2 s + 2 t_enc)",
        [str(max_realtime_streams(systems[n].get("capacity"), bound)) for n in names],
        "real-time streams at final lag p95 <= 2 s + 2 t_enc",
    )
    for kind in NOISES:
        table.row(
            f"words on {_num(get(systems, names[0], 'noise', kind, 'audio_s'), 0)} s of {kind}",
            [str(get(systems[n], "noise", kind, "final_words")) for n in names],
            f"words on {kind}",
        )
    _long_session_rows(table, systems, names)
    return table.lines


def _accuracy_rows(table: _SummaryTable, systems: dict[str, Any], names: list[str]) -> None:
    acc = {n: systems[n].get("accuracy") or {} for n in names}
    a0 = next(iter(acc.values()), {})
    clips = a0.get("sessions")
    table.row(
        f"streaming WER (finals), {clips} clips", [_pct(acc[n].get("wer_stream")) for n in names]
    )
    table.row("offline WER, same model and beam", [_pct(acc[n].get("wer_offline")) for n in names])
    table.row(
        "streaming / offline WER",
        [_num(acc[n].get("wer_ratio")) for n in names],
        "streaming WER / offline WER",
    )
    table.row(
        "partial (first-seen) lag p50 / p95 / max, one stream",
        [_lags(acc[n].get("latency"), "first_seen") for n in names],
        "partial (first-seen) lag p50, one stream (s)",
    )
    table.row(
        "final lag p50 / p95 / max, one stream",
        [_lags(acc[n].get("latency"), "final") for n in names],
        "final lag p50, one stream (s)",
    )
    table.row("time to first partial p50 (first text, from the first frame)",
        [_s(get(acc[n], "time_to_first_text", "p50")) for n in names])  # fmt: skip
    table.row(
        "words shown in a partial before their final",
        [_pct(get(acc[n], "latency", "seen_before_final")) for n in names],
    )
    table.row(
        "reference words matched (timed)",
        [
            f"{get(acc[n], 'latency', 'matched_words')} / "
            f"{get(acc[n], 'latency', 'reference_words')}"
            for n in names
        ],
    )


def _long_session_rows(table: _SummaryTable, systems: dict[str, Any], names: list[str]) -> None:
    longs = {n: systems[n].get("long") or {} for n in names}
    table.row(
        f"long session ({_num(get(longs, names[0], 'audio_s'), 0)} s): WER stream / offline",
        [
            f"{_pct(longs[n].get('wer_stream'))} / {_pct(longs[n].get('wer_offline'))}"
            for n in names
        ],
        "long session: streaming WER / offline WER",
    )
    table.row(
        "long session: final lag p50 in the first / last minute",
        [
            f"{_s(get(longs[n], 'latency_first_window', 'final', 'p50'))} / "
            f"{_s(get(longs[n], 'latency_last_window', 'final', 'p50'))}"
            for n in names
        ],
        "long session: last-minute / first-minute final lag p50",
    )
    table.row(
        "long session: RSS start → end (growth)",
        [_rss(longs[n]) for n in names],
        "RSS growth over the long session (MiB)",
    )


def _goals(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if results.get("failures"):
        lines += ["", "**Failures:** " + "; ".join(results["failures"])]
    if results.get("goals"):
        lines += [
            "",
            "## Goals (whisperwire; bounds from t_enc and B of this run)",
            "",
            "| goal | value | target | met | note |",
            "|---|---|---|---|---|",
        ]
        for g in results["goals"]:
            lines.append(
                f"| {g['goal']} | {g['value']} | {g['target']} | {mark(g['met'])} | "
                f"{g.get('note', '')} |"
            )
    return lines


def _capacity(results: dict[str, Any], names: list[str]) -> list[str]:
    systems: dict[str, Any] = results.get("systems", {})
    st = results.get("settings", {})
    lines: list[str] = []
    costs = results.get("costs")
    if costs:
        lines += ["", *bench_costs.markdown(costs)]
    lines += [
        "",
        "## Capacity: concurrent real-time streams",
        "",
        *(
            [
                f"Beside the machine's encoder-bound capacity B = {costs['B']} streams "
                f"(t_enc {costs['t_enc']:.3f} s; see the cost model).",
                "",
            ]
            if costs
            else []
        ),
        f"Each stream is whole `librispeech_test_other` clips joined with 0.3 s of silence "
        f"(at least {st.get('stream_s')} s, no clip in two streams); "
        f"{st.get('capacity_stagger')}.",
        "",
        "| N | system | admitted | first-seen lag p50 / p95 | final lag p50 / p95 / max | "
        "lag slope | real time | CPU s per audio s | WER |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ns = sorted({r["n"] for n in names for r in (rows(systems[n].get("capacity")))})
    for n_streams in ns:
        for name in names:
            r = next((x for x in rows(systems[name].get("capacity")) if x["n"] == n_streams), None)
            if r is None:
                continue
            lat = r.get("latency", {})
            kept = "yes" if r.get("realtime_kept") else "**no**"
            lines.append(
                f"| {n_streams} | {name} | {r.get('admitted', n_streams)} | "
                f"{_num(get(lat, 'first_seen', 'p50'))} / "
                f"{_num(get(lat, 'first_seen', 'p95'))} s | {_num(get(lat, 'final', 'p50'))} / "
                f"{_num(get(lat, 'final', 'p95'))} / {_num(get(lat, 'final', 'max'))} s | "
                f"{_num(r.get('lag_slope'), 3)} | {kept} | "
                f"{_num(r.get('cpu_per_audio_s'), 3)} | {_pct(r.get('wer_stream'))} |"
            )
    return lines


def _hallucination(results: dict[str, Any], names: list[str]) -> list[str]:
    systems: dict[str, Any] = results.get("systems", {})
    st = results.get("settings", {})
    lines = [
        "",
        "## Hallucination: silence and noise",
        "",
        f"Digital silence, and white and pink Gaussian noise at {st.get('noise_dbfs')} dBFS RMS, "
        "streamed in real time; words in `final` messages (what the server emitted as text).",
        "",
        "| input | " + " | ".join(f"{n} words | {n} text" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for kind in NOISES:
        cells = []
        for name in names:
            entry = get(systems, name, "noise", kind) or {}
            text = str(entry.get("text") or "").replace("|", "\\|")[:80]
            cells += [str(entry.get("final_words")), f"{text}" if text else ""]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines


def _long_session(systems: dict[str, Any], names: list[str]) -> list[str]:
    longs = {n: systems[n].get("long") or {} for n in names}
    lines = [
        "",
        "## Long session",
        "",
        "| system | audio | WER stream / offline | final lag p50 / p95 first minute | "
        "last minute | RSS samples (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        lg = longs[name]
        if not lg or "error" in lg:
            continue
        rss = ", ".join(f"{mb:.0f}" for _, mb in lg.get("rss_mb", []))
        lines.append(
            f"| {name} | {_num(lg.get('audio_s'), 0)} s | {_pct(lg.get('wer_stream'))} / "
            f"{_pct(lg.get('wer_offline'))} | "
            f"{_num(get(lg, 'latency_first_window', 'final', 'p50'))} / "
            f"{_num(get(lg, 'latency_first_window', 'final', 'p95'))} s | "
            f"{_num(get(lg, 'latency_last_window', 'final', 'p50'))} / "
            f"{_num(get(lg, 'latency_last_window', 'final', 'p95'))} s | {rss} |"
        )
    lines.append("")
    lines.append(
        f"RSS sampled every {get(longs, names[0], 'rss_interval_s')} s from a freshly started "
        "server (model loaded and warmed up) through the end of the session."
    )
    return lines


def _soak(systems: dict[str, Any], names: list[str]) -> list[str]:
    soaks = {n: systems[n]["soak"] for n in names if systems[n].get("soak")}
    if not soaks:
        return []
    lines = [
        "",
        "## Soak",
        "",
        "| system | audio | WER stream / offline | final lag p50 / p95 / max, first / last "
        "window | lag slope | short sessions (refused): WER stream / offline, "
        "final lag p50 / p95 / max | RSS start → end | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, sk in soaks.items():
        if "error" in sk:
            lines.append(f"| {name} | {sk['error']} |  |  |  |  |  |  |")
            continue
        first, last = sk.get("latency_first_window"), sk.get("latency_last_window")
        lines.append(
            f"| {name} | {_num((sk.get('audio_s') or 0) / 60, 1)} min | "
            f"{_pct(sk.get('wer_stream'))} / {_pct(sk.get('wer_offline'))} | "
            f"{_lags(first, 'final')} / {_lags(last, 'final')} | {_num(sk.get('lag_slope'), 4)} | "
            f"{sk.get('short_sessions')} ({sk.get('short_refused')}): "
            f"{_pct(sk.get('short_wer_stream'))} / "
            f"{_pct(sk.get('short_wer_offline'))}, {_lags(sk.get('short_latency'), 'final')} | "
            f"{_rss(sk)} | {len(sk.get('session_errors') or [])} |"
        )
    window = next(iter(soaks.values())).get("window_s")
    lines += [
        "",
        f"One session of the long-form files in turn, and a short test-other session every "
        f"{_num(next(iter(soaks.values())).get('short_every_s'), 0)} s beside it; the first and "
        f"last windows are {_num(window, 0)} s of the long session.",
    ]
    return lines


def _cpu_use(systems: dict[str, Any], names: list[str]) -> list[str]:
    lines = [
        "",
        "## CPU use during each scenario",
        "",
        "Shares of the whole machine's CPU time (all cores): the server under test, the "
        "benchmark client, and everything else running on the machine meanwhile.",
        "",
        "| system | scenario | wall | machine busy | server | client | others |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        server = get(systems, name, "server") or {}
        for scenario, share in (server.get("cpu_share") or {}).items():
            lines.append(
                f"| {name} | {scenario} | {_num(get(server, 'wall_s', scenario), 0)} s | "
                f"{_pct(share.get('machine_busy'))} | {_pct(share.get('server'))} | "
                f"{_pct(share.get('bench_client'))} | {_pct(share.get('others'))} |"
            )
    return lines
