"""The run's goals: the acceptance of the throughput issue, judged on a results dict, with
bounds from the cost model of the same run (t_enc: one encoder pass; B: encoder-bound
capacity)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whisperwire.bench.corpus import NOISES
from whisperwire.bench.results import get

Goal = tuple[str, Any, str, float | None, str]  # name, value, operator, target, note


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
    p95 = get(row, "latency", "final", "p95")
    return bool(row.get("realtime_kept")) and p95 is not None and p95 <= p95_limit


def p95_bound(results: dict[str, Any]) -> float | None:
    """The acceptance's final-lag p95 bound, 2 s + 2 t_enc of the run (None: no cost model)."""
    t_enc = get(results, "costs", "t_enc")
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
    ww = get(results, "systems", "whisperwire") or {}
    acc = ww.get("accuracy") or {}
    cap = ww.get("capacity")
    long = ww.get("long") or {}
    noise = ww.get("noise") or {}
    t_enc = get(results, "costs", "t_enc")
    t = t_enc if isinstance(t_enc, (int, float)) else None
    bound = p95_bound(results)

    def relative(value: Any, base: float, per_t: float) -> tuple[Any, str, float | None]:
        """A lag at most `base` + `per_t` t_enc."""
        return value, "<=", (round(base + per_t * t, 3) if t is not None else None)

    items: list[Goal] = [
        ("streaming WER / offline WER", acc.get("wer_ratio"), "<=", 1.10, ""),
        ("final lag p50, one stream (s)", *relative(get(acc, "latency", "final", "p50"), 1, 1),
         "1.0 s + t_enc"),
        ("final lag p95, one stream (s)", *relative(get(acc, "latency", "final", "p95"), 2, 2),
         "2.0 s + 2 t_enc"),
        ("partial (first-seen) lag p50, one stream (s)",
         *relative(get(acc, "latency", "first_seen", "p50"), 0.5, 1), "0.5 s + t_enc"),
    ]  # fmt: skip
    items += _long_session_goals(long)
    items += _capacity_goals(get(results, "costs", "B"), cap, bound)
    for kind in NOISES:
        items.append((f"words on {kind}", get(noise, kind, "final_words"), "==", 0, ""))
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
    return _judged(items)


def _long_session_goals(long: dict[str, Any]) -> list[Goal]:
    items: list[Goal] = []
    ratio = None
    if long.get("wer_stream") is not None and long.get("wer_offline"):
        ratio = round(long["wer_stream"] / long["wer_offline"], 3)
    items.append(("long session: streaming WER / offline WER", ratio, "<=", 1.10, ""))
    first = get(long, "latency_first_window", "final", "p50")
    last = get(long, "latency_last_window", "final", "p50")
    drift = round(last / first, 3) if first and last is not None else None
    items.append(
        ("long session: last-minute / first-minute final lag p50", drift, "<=", 1.20,
         f"{first} s then {last} s")
    )  # fmt: skip
    return items


def _capacity_goals(capacity_b: Any, cap: Any, bound: float | None) -> list[Goal]:
    tried = max((r["n"] for r in cap), default=None) if isinstance(cap, list) else None
    items: list[Goal] = []
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
    return items


def _judged(items: list[Goal]) -> list[dict[str, Any]]:
    """Each goal with whether its value meets its target (None: no value or no target)."""
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
