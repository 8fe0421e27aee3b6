"""The benchmark's Markdown report says what was run: the baseline only where one ran."""

from __future__ import annotations

import json
from pathlib import Path

from whisperwire.bench.markdown import markdown

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results" / "results.json"


def test_a_run_without_the_baseline_does_not_describe_one() -> None:
    results = json.loads(RESULTS.read_text())
    assert results["settings"]["baseline_window_s"] is not None
    assert "The baseline decodes fixed 3.0 s windows" in markdown(results)
    results["settings"]["baseline_window_s"] = None  # `bench --no-baseline`
    page = markdown(results)
    assert "baseline decodes" not in page and "None s" not in page
    assert "Beam size 5, model tiny.en (bundled), int8." in page
