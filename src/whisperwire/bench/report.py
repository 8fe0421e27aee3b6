"""What a benchmark run leaves behind: results.json, results.md and three PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisperwire.bench import costs as bench_costs

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PLOTS = {
    "latency_vs_streams": "latency_vs_streams.png",
    "lag_cdf": "lag_cdf.png",
    "rss": "rss.png",
}
NOISES = ("silence", "white", "pink")


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


# --------------------------------------------------------------------------- goals


def max_realtime_streams(rows: Sequence[dict[str, Any]] | None, p95_limit: float = 2.0) -> Any:
    """The most streams kept in real time at final p95 <= limit, at an N such that it and
    every smaller N kept it: the streams admitted, where admission control refused some."""
    if not rows or not isinstance(rows, list):
        return None
    best = 0
    for row in sorted(rows, key=lambda r: r["n"]):
        if _row_kept(row, p95_limit):
            best = max(best, row.get("admitted", row["n"]))
        else:
            break
    return best


def _row_kept(row: dict[str, Any], p95_limit: float) -> bool:
    p95 = _get(row, "latency", "final", "p95")
    return bool(row.get("realtime_kept")) and p95 is not None and p95 <= p95_limit


def p95_bound(results: dict[str, Any]) -> float | None:
    """The acceptance's final-lag p95 bound, 2 s + 2 t_enc of the run (None: no cost model)."""
    t_enc = _get(results, "costs", "t_enc")
    return 2.0 + 2 * t_enc if isinstance(t_enc, (int, float)) else None


def overload_held(rows: Sequence[dict[str, Any]] | None, attempted: float) -> tuple[Any, str]:
    """The capacity row of the first N >= `attempted` streams, and a note of how many were
    admitted and refused; the row is None when no N that large was tried."""
    rows = [r for r in (rows or []) if isinstance(r, dict) and r.get("n", 0) >= attempted]
    if not rows:
        return None, f"no N >= {attempted:g} tried"
    row = min(rows, key=lambda r: r["n"])
    ratio = None
    if row.get("wer_offline"):
        ratio = round(row.get("wer_stream", 0) / row["wer_offline"], 2)
    note = (
        f"N={row['n']}: {row.get('admitted', row['n'])} admitted, {row.get('refused', 0)} "
        f"refused; admitted streams' WER / offline {ratio}"
    )
    return row, note


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance of the throughput issue, with its bounds taken from the cost model of
    the same run: t_enc (one encoder pass, all cores) and B (encoder-bound capacity)."""
    ww = _get(results, "systems", "whisperwire") or {}
    acc = ww.get("accuracy") or {}
    cap = ww.get("capacity")
    long = ww.get("long") or {}
    noise = ww.get("noise") or {}
    t_enc = _get(results, "costs", "t_enc")
    capacity_b = _get(results, "costs", "B")
    t = t_enc if isinstance(t_enc, (int, float)) else None
    tried = max((r["n"] for r in cap), default=None) if isinstance(cap, list) else None
    bound = p95_bound(results)

    def relative(value: Any, base: float, per_t: float) -> tuple[Any, str, float | None]:
        """A lag at most `base` + `per_t` t_enc."""
        return value, "<=", (round(base + per_t * t, 3) if t is not None else None)

    items: list[tuple[str, Any, str, float | None, str]] = [
        ("streaming WER / offline WER", acc.get("wer_ratio"), "<=", 1.10, ""),
        ("final lag p50, one stream (s)", *relative(_get(acc, "latency", "final", "p50"), 1, 1),
         "1.0 s + t_enc"),
        ("final lag p95, one stream (s)", *relative(_get(acc, "latency", "final", "p95"), 2, 2),
         "2.0 s + 2 t_enc"),
        ("partial (first-seen) lag p50, one stream (s)",
         *relative(_get(acc, "latency", "first_seen", "p50"), 0.5, 1), "0.5 s + t_enc"),
    ]  # fmt: skip
    ratio = None
    if long.get("wer_stream") is not None and long.get("wer_offline"):
        ratio = round(long["wer_stream"] / long["wer_offline"], 3)
    items.append(("long session: streaming WER / offline WER", ratio, "<=", 1.10, ""))
    first = _get(long, "latency_first_window", "final", "p50")
    last = _get(long, "latency_last_window", "final", "p50")
    drift = round(last / first, 3) if first and last is not None else None
    items.append(
        ("long session: last-minute / first-minute final lag p50", drift, "<=", 1.20,
         f"{first} s then {last} s")
    )  # fmt: skip
    streams = max_realtime_streams(cap, bound) if bound is not None else None
    items.append(
        (
            "real-time streams at final lag p95 <= 2 s + 2 t_enc",
            streams,
            ">=",
            round(0.8 * capacity_b, 2) if isinstance(capacity_b, (int, float)) else None,
            f"0.8 B; largest N tried: {tried}",
        )
    )
    held: Any = None
    note = "needs the cost model"
    if isinstance(capacity_b, (int, float)) and bound is not None:
        row, note = overload_held(cap, 2 * capacity_b)
        if row is not None:
            held = int(row.get("refused", 0) > 0 and _row_kept(row, bound))
    items.append(("at 2 B streams: the rest refused, the admitted kept (1 = yes)", held, "==", 1,
                  note))  # fmt: skip
    for kind in NOISES:
        items.append((f"words on {kind}", _get(noise, kind, "final_words"), "==", 0, ""))
    steady = long.get("rss_growth_after_first_minute_mb")
    items.append(
        (
            "RSS growth over the long session (MiB)",
            long.get("rss_growth_mb"),
            "<",
            50,
            f"from the session's start; after its first minute: {steady} MiB",
        )
    )
    out = []
    for name, value, op, target, note in items:
        met = None
        if isinstance(value, (int, float)) and target is not None:
            met = {
                "<=": value <= target,
                ">=": value >= target,
                "<": value < target,
                "==": value == target,
            }[op]
        shown = f"{op} {target:g}" if target is not None else f"{op} ? (no cost model)"
        out.append({"goal": name, "value": value, "target": shown, "met": met, "note": note})
    return out


# --------------------------------------------------------------------------- markdown


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _s(x: Any) -> str:
    return "–" if x is None else f"{x:.2f} s"


def _num(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _lags(block: Any, key: str) -> str:
    b = _get(block, key) or {}
    if not b.get("n"):
        return "–"
    return f"{b['p50']:.2f} / {b['p95']:.2f} / {b['max']:.2f} s"


def _mark(met: Any) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def markdown(results: dict[str, Any], plots: Sequence[str] = ()) -> str:
    systems: dict[str, Any] = results.get("systems", {})
    names = list(systems)
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
        server = _get(systems, name, "server", "command") or _get(systems, name, "server", "url")
        lines.append(f"- **{name}**: `{server}`")
    lines += [
        "",
        f"Beam size {st.get('beam_size')}, model tiny.en (bundled), int8. Audio is streamed as "
        f"{st.get('pcm')}. The baseline decodes fixed {st.get('baseline_window_s')} s windows "
        "with no overlap, no VAD and no partials (what the whisper.cpp `stream` seed does), "
        "behind the same WebSocket protocol.",
        "",
        "## Summary",
        "",
        "| figure | " + " | ".join(names) + " | goal | met |",
        "|---|" + "---|" * len(names) + "---|---|",
    ]
    goal_by_name = {g["goal"]: g for g in results.get("goals", [])}

    def row(label: str, values: list[str], goal: str | None = None) -> None:
        g = goal_by_name.get(goal or "", {})
        lines.append(
            f"| {label} | " + " | ".join(values) + f" | {g.get('target', '')} | "
            f"{_mark(g.get('met')) if g else ''} |"
        )

    acc = {n: systems[n].get("accuracy") or {} for n in names}
    a0 = next(iter(acc.values()), {})
    clips = a0.get("sessions")
    row(f"streaming WER (finals), {clips} clips", [_pct(acc[n].get("wer_stream")) for n in names])
    row("offline WER, same model and beam", [_pct(acc[n].get("wer_offline")) for n in names])
    row(
        "streaming / offline WER",
        [_num(acc[n].get("wer_ratio")) for n in names],
        "streaming WER / offline WER",
    )
    row(
        "partial (first-seen) lag p50 / p95 / max, one stream",
        [_lags(acc[n].get("latency"), "first_seen") for n in names],
        "partial (first-seen) lag p50, one stream (s)",
    )
    row(
        "final lag p50 / p95 / max, one stream",
        [_lags(acc[n].get("latency"), "final") for n in names],
        "final lag p50, one stream (s)",
    )
    row("time to first partial p50 (first text, from the first frame)",
        [_s(_get(acc[n], "time_to_first_text", "p50")) for n in names])  # fmt: skip
    row(
        "words shown in a partial before their final",
        [_pct(_get(acc[n], "latency", "seen_before_final")) for n in names],
    )
    row(
        "reference words matched (timed)",
        [
            f"{_get(acc[n], 'latency', 'matched_words')} / "
            f"{_get(acc[n], 'latency', 'reference_words')}"
            for n in names
        ],
    )
    bound = p95_bound(results) or 2.0
    row(
        f"real-time streams at final lag p95 <= {bound:.2f} s (2 s + 2 t_enc)",
        [str(max_realtime_streams(systems[n].get("capacity"), bound)) for n in names],
        "real-time streams at final lag p95 <= 2 s + 2 t_enc",
    )
    for kind in NOISES:
        row(
            f"words on {_num(_get(systems, names[0], 'noise', kind, 'audio_s'), 0)} s of {kind}",
            [str(_get(systems[n], "noise", kind, "final_words")) for n in names],
            f"words on {kind}",
        )
    longs = {n: systems[n].get("long") or {} for n in names}
    row(
        f"long session ({_num(_get(longs, names[0], 'audio_s'), 0)} s): WER stream / offline",
        [
            f"{_pct(longs[n].get('wer_stream'))} / {_pct(longs[n].get('wer_offline'))}"
            for n in names
        ],
        "long session: streaming WER / offline WER",
    )
    row(
        "long session: final lag p50 in the first / last minute",
        [
            f"{_s(_get(longs[n], 'latency_first_window', 'final', 'p50'))} / "
            f"{_s(_get(longs[n], 'latency_last_window', 'final', 'p50'))}"
            for n in names
        ],
        "long session: last-minute / first-minute final lag p50",
    )
    row(
        "long session: RSS start → end (growth)",
        [_rss(longs[n]) for n in names],
        "RSS growth over the long session (MiB)",
    )
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
                f"| {g['goal']} | {g['value']} | {g['target']} | {_mark(g['met'])} | "
                f"{g.get('note', '')} |"
            )

    # capacity
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
    ns = sorted({r["n"] for n in names for r in (_list(systems[n].get("capacity")))})
    for n_streams in ns:
        for name in names:
            r = next((x for x in _list(systems[name].get("capacity")) if x["n"] == n_streams), None)
            if r is None:
                continue
            lat = r.get("latency", {})
            kept = "yes" if r.get("realtime_kept") else "**no**"
            lines.append(
                f"| {n_streams} | {name} | {r.get('admitted', n_streams)} | "
                f"{_num(_get(lat, 'first_seen', 'p50'))} / "
                f"{_num(_get(lat, 'first_seen', 'p95'))} s | {_num(_get(lat, 'final', 'p50'))} / "
                f"{_num(_get(lat, 'final', 'p95'))} / {_num(_get(lat, 'final', 'max'))} s | "
                f"{_num(r.get('lag_slope'), 3)} | {kept} | "
                f"{_num(r.get('cpu_per_audio_s'), 3)} | {_pct(r.get('wer_stream'))} |"
            )

    # hallucination
    lines += [
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
            entry = _get(systems, name, "noise", kind) or {}
            text = str(entry.get("text") or "").replace("|", "\\|")[:80]
            cells += [str(entry.get("final_words")), f"{text}" if text else ""]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")

    # long session
    lines += [
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
            f"{_num(_get(lg, 'latency_first_window', 'final', 'p50'))} / "
            f"{_num(_get(lg, 'latency_first_window', 'final', 'p95'))} s | "
            f"{_num(_get(lg, 'latency_last_window', 'final', 'p50'))} / "
            f"{_num(_get(lg, 'latency_last_window', 'final', 'p95'))} s | {rss} |"
        )
    lines.append("")
    lines.append(
        f"RSS sampled every {_get(longs, names[0], 'rss_interval_s')} s from a freshly started "
        "server (model loaded and warmed up) through the end of the session."
    )

    lines += [
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
        server = _get(systems, name, "server") or {}
        for scenario, share in (server.get("cpu_share") or {}).items():
            lines.append(
                f"| {name} | {scenario} | {_num(_get(server, 'wall_s', scenario), 0)} s | "
                f"{_pct(share.get('machine_busy'))} | {_pct(share.get('server'))} | "
                f"{_pct(share.get('bench_client'))} | {_pct(share.get('others'))} |"
            )

    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]

    lines += ["", "## Definitions", ""]
    for key, text in results.get("definitions", {}).items():
        lines.append(f"- **{key}**: {text}")
    lines.append("")
    return "\n".join(lines)


def _list(x: Any) -> list[dict[str, Any]]:
    return x if isinstance(x, list) else []


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

COLORS = {"whisperwire": "tab:blue", "baseline": "tab:orange"}


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: dict[str, Any] = results.get("systems", {})
    written = []

    # Latency against the number of concurrent streams.
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    drawn = False
    for name, data in systems.items():
        rows = sorted(_list(data.get("capacity")), key=lambda r: r["n"])
        rows = [r for r in rows if _get(r, "latency", "final", "n")]
        if not rows:
            continue
        n = [r["n"] for r in rows]
        color = COLORS.get(name)
        ax.plot(n, [_get(r, "latency", "final", "p50") for r in rows], "o-", color=color,
                label=f"{name} final p50")  # fmt: skip
        ax.plot(n, [_get(r, "latency", "final", "p95") for r in rows], "s--", color=color,
                label=f"{name} final p95")  # fmt: skip
        if any(_get(r, "latency", "seen_before_final") for r in rows):
            ax.plot(n, [_get(r, "latency", "first_seen", "p50") for r in rows], "^:",
                    color=color, label=f"{name} first-seen p50")  # fmt: skip
        drawn = True
    if drawn:
        ax.axhline(2.0, color="grey", lw=0.8, ls=":", label="goal: final p95 2 s")
        ax.set_xscale("log", base=2)
        ns = sorted({r["n"] for d in systems.values() for r in _list(d.get("capacity"))})
        ax.set_xticks(ns, [str(x) for x in ns])
        ax.set_yscale("log")
        ticks = [0.25, 0.5, 1, 2, 5, 10, 30, 100, 300, 1000]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_ylim(0.25, max(4.0, ax.get_ylim()[1]))
        ax.set_xlabel("concurrent real-time streams")
        ax.set_ylabel("lag (s, log scale)")
        ax.set_title("Word lag against concurrent streams")
        written.append(_save(fig, ax, out / PLOTS["latency_vs_streams"], fontsize=7))
    plt.close(fig)

    # Lag CDF at one stream (the accuracy run).
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    drawn = False
    for name, data in systems.items():
        lags = _get(data, "accuracy", "lags") or {}
        for key, style in (("final", "-"), ("first_seen", "--")):
            values = sorted(lags.get(key) or [])
            if not values:
                continue
            if key == "first_seen" and not _get(data, "accuracy", "latency", "seen_before_final"):
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, style, color=COLORS.get(name),
                    label=f"{name} {key.replace('_', '-')}")  # fmt: skip
            drawn = True
    if drawn:
        ax.set_xlabel("lag after the word's audio was sent (s)")
        ax.set_ylabel("fraction of words")
        ax.set_title("Word lag, one stream at a time")
        ax.set_ylim(0, 1)
        written.append(_save(fig, ax, out / PLOTS["lag_cdf"], fontsize=8, loc="lower right"))
    plt.close(fig)

    # RSS over the long session.
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    drawn = False
    for name, data in systems.items():
        samples = _get(data, "long", "rss_mb") or []
        if samples:
            ax.plot([t / 60 for t, _ in samples], [mb for _, mb in samples], "o-",
                    color=COLORS.get(name), label=name, ms=3)  # fmt: skip
            drawn = True
    if drawn:
        ax.set_xlabel("session time (min)")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_title("Server memory over the long session")
        ax.set_ylim(bottom=0)
        written.append(_save(fig, ax, out / PLOTS["rss"], fontsize=8))
    plt.close(fig)
    return written


def _save(fig: Any, ax: Any, path: Path, **legend: Any) -> Path:
    """The finishing every plot shares: grid, legend, tight layout, PNG."""
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_all(results: dict[str, Any], out: Path, plots: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_NAME).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    written: list[Path] = []
    if plots:
        try:
            written = plot_all(results, out)
        except ImportError:
            print("bench: matplotlib is not installed: no plots (pip install matplotlib)")
    (out / MARKDOWN_NAME).write_text(markdown(results, [p.name for p in written]), encoding="utf-8")


def console_summary(results: dict[str, Any], out: Path) -> str:
    lines = [f"results: {out / JSON_NAME}, {out / MARKDOWN_NAME}"]
    for g in results.get("goals", []):
        value = g["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"  {g['goal']}: {shown} (goal {g['target']}) {_mark(g['met'])}")
    if results.get("failures"):
        lines.append("failures: " + "; ".join(results["failures"]))
    return "\n".join(lines)
