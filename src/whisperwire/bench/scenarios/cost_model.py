"""The cost-model scenario: `bench.costs` run in-process, before any server competes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whisperwire.bench.corpus import load, long_clip


def run_costs(root: Path, repeats: int) -> dict[str, Any]:
    """The cost model of the bundled model on the long-form file's first 30 s."""
    from whisperwire.bench.costs import measure_costs
    from whisperwire.engine import bundled_model_path

    clip = long_clip(root, None)
    audio = load(clip.path, 0.0, 30.0)
    costs = measure_costs(str(bundled_model_path()), audio, repeats=repeats)
    costs["model"] = "tiny.en (bundled)"
    return costs
