"""What a benchmark run leaves behind: results.json, results.md (`markdown`) and three PNG
plots (`plots`); the goals are judged in `goals`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whisperwire.bench.markdown import mark, markdown
from whisperwire.bench.plots import plot_all

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"


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
        lines.append(f"  {g['goal']}: {shown} (goal {g['target']}) {mark(g['met'])}")
    if results.get("failures"):
        lines.append("failures: " + "; ".join(results["failures"]))
    return "\n".join(lines)
