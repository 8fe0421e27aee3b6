"""The PNG plots of a results dict: lag against streams, the lag CDF, RSS over time."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whisperwire.bench.goals import p95_bound
from whisperwire.bench.results import get, rows

PLOTS = {
    "latency_vs_streams": "latency_vs_streams.png",
    "lag_cdf": "lag_cdf.png",
    "rss": "rss.png",
}
COLORS = {"whisperwire": "tab:blue", "baseline": "tab:orange"}
OTHER_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def colors(names: list[str]) -> dict[str, str]:
    """A colour for each system: the fixed ones for whisperwire and the baseline, the others
    (`--also`) in turn from colours neither uses, so no two systems share one."""
    others = itertools.cycle(OTHER_COLORS)
    return {name: COLORS.get(name) or next(others) for name in names}


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the plots that have data into `out`; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: dict[str, Any] = results.get("systems", {})
    palette = colors(list(systems))
    Draw = Callable[[Any, dict[str, Any], dict[str, str]], bool]
    drawings: list[tuple[str, Draw, dict[str, Any]]] = [
        (
            "latency_vs_streams",
            functools.partial(_latency_vs_streams, bound=p95_bound(results)),
            {"fontsize": 7},
        ),
        ("lag_cdf", _lag_cdf, {"fontsize": 8, "loc": "lower right"}),
        ("rss", _rss_over_time, {"fontsize": 8}),
    ]
    written = []
    for name, draw, legend in drawings:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        if draw(ax, systems, palette):
            written.append(_save(fig, ax, out / PLOTS[name], **legend))
        plt.close(fig)
    return written


def _latency_vs_streams(
    ax: Any, systems: dict[str, Any], palette: dict[str, str], bound: float | None
) -> bool:
    """Latency against the number of concurrent streams, with the run's p95 bound (2 s +
    2 t_enc; 2 s where the run has no cost model)."""
    drawn = False
    for name, data in systems.items():
        measured = sorted(rows(data.get("capacity")), key=lambda r: r["n"])
        measured = [r for r in measured if get(r, "latency", "final", "n")]
        if not measured:
            continue
        n = [r["n"] for r in measured]
        color = palette[name]
        ax.plot(n, [get(r, "latency", "final", "p50") for r in measured], "o-", color=color,
                label=f"{name} final p50")  # fmt: skip
        ax.plot(n, [get(r, "latency", "final", "p95") for r in measured], "s--", color=color,
                label=f"{name} final p95")  # fmt: skip
        if any(get(r, "latency", "seen_before_final") for r in measured):
            ax.plot(n, [get(r, "latency", "first_seen", "p50") for r in measured], "^:",
                    color=color, label=f"{name} first-seen p50")  # fmt: skip
        drawn = True
    if drawn:
        goal = f"2 s + 2 t_enc = {bound:.2f} s" if bound is not None else "2 s"
        ax.axhline(bound or 2.0, color="grey", lw=0.8, ls=":", label=f"goal: final p95 {goal}")
        ax.set_xscale("log", base=2)
        ns = sorted({r["n"] for d in systems.values() for r in rows(d.get("capacity"))})
        ax.set_xticks(ns, [str(x) for x in ns])
        ax.set_yscale("log")
        ticks = [0.25, 0.5, 1, 2, 5, 10, 30, 100, 300, 1000]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_ylim(0.25, max(4.0, ax.get_ylim()[1]))
        ax.set_xlabel("concurrent real-time streams")
        ax.set_ylabel("lag (s, log scale)")
        ax.set_title("Word lag against concurrent streams")
    return drawn


def _lag_cdf(ax: Any, systems: dict[str, Any], palette: dict[str, str]) -> bool:
    """Lag CDF at one stream (the accuracy run)."""
    drawn = False
    for name, data in systems.items():
        lags = get(data, "accuracy", "lags") or {}
        for key, style in (("final", "-"), ("first_seen", "--")):
            values = sorted(lags.get(key) or [])
            if not values:
                continue
            if key == "first_seen" and not get(data, "accuracy", "latency", "seen_before_final"):
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, style, color=palette[name],
                    label=f"{name} {key.replace('_', '-')}")  # fmt: skip
            drawn = True
    if drawn:
        ax.set_xlabel("lag after the word's audio was sent (s)")
        ax.set_ylabel("fraction of words")
        ax.set_title("Word lag, one stream at a time")
        ax.set_ylim(0, 1)
    return drawn


def _rss_over_time(ax: Any, systems: dict[str, Any], palette: dict[str, str]) -> bool:
    """RSS over the long session."""
    drawn = False
    for name, data in systems.items():
        samples = get(data, "long", "rss_mb") or []
        if samples:
            ax.plot([t / 60 for t, _ in samples], [mb for _, mb in samples], "o-",
                    color=palette[name], label=name, ms=3)  # fmt: skip
            drawn = True
    if drawn:
        ax.set_xlabel("session time (min)")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_title("Server memory over the long session")
        ax.set_ylim(bottom=0)
    return drawn


def _save(fig: Any, ax: Any, path: Path, **legend: Any) -> Path:
    """The finishing every plot shares: grid, legend, tight layout, PNG."""
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path)
    return path
