#!/usr/bin/env python3
"""Benchmark a live whisperwire server beside a fixed-window baseline.

    python benchmarks/run.py --quick          # about 5 minutes
    python benchmarks/run.py                  # the full run (about 75 minutes on 2 cores)
    python benchmarks/run.py --url ws://host:9002/ --no-baseline

Writes results.json, results.md and PNG plots to --out (default benchmarks/results/).
The logic lives in `whisperwire.bench` (also `whisperwire bench`).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from whisperwire.bench.runner import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from whisperwire.bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
