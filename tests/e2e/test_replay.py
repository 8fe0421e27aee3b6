"""`whisperwire replay` with the real model: the virtual clock makes a policy's transcript
repeatable, and the transcript is as good as the live server's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import REPO, audio_root


def test_a_replay_is_repeatable_and_scores_each_variant(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    command = [
        sys.executable, "-m", "whisperwire", "replay", "--clips", "2",
        "--audio", str(audio_root()), "--cache", str(tmp_path / "offline.json"),
        "--also", "again=", "--also", "agreement=--commit agreement", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, f"replay failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    variants = json.loads(out.read_text())["variants"]
    assert set(variants) == {"whisperwire", "again", "agreement"}
    one, again = variants["whisperwire"], variants["again"]
    assert one["texts"] == again["texts"] and one["latency"] == again["latency"]
    for name, figures in variants.items():
        assert figures["wer"] <= 1.5 * figures["wer_offline"] + 0.05, (name, figures["wer"])
        final = figures["latency"]["final"]
        assert final["n"] > 0 and 0 < final["p50"] <= final["p95"], (name, final)
        assert f"{name}: WER" in done.stdout
    assert variants["agreement"]["flags"] == ["--commit", "agreement"]


def test_several_seeds_replay_in_worker_processes_as_each_would_alone(tmp_path: Path) -> None:
    """`--seed 1,2 --jobs 2`: a jittered replay per seed, each in its own process, and their
    median; a seed's run is the one `--seed` with that seed alone gives."""

    def replay(seeds: str, out: Path) -> dict:
        command = [
            sys.executable, "-m", "whisperwire", "replay", "--clips", "1",
            "--audio", str(audio_root()), "--cache", str(tmp_path / "offline.json"),
            "--cost-jitter", "0.3", "--seed", seeds, "--jobs", "2", "--out", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
        assert done.returncode == 0, f"replay failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return json.loads(out.read_text())

    both = replay("1,2", tmp_path / "both.json")
    alone = replay("2", tmp_path / "alone.json")["variants"]["whisperwire"]
    figures = both["variants"]["whisperwire"]
    assert both["seed"] == [1, 2] and set(figures["by_seed"]) == {"1", "2"}
    second = figures["by_seed"]["2"]
    assert second["texts"] == alone["texts"] and second["latency"] == alone["latency"]
    low, high = figures["wer_range"]
    assert low <= figures["wer"] <= high
    assert sorted([low, high]) == sorted(f["wer"] for f in figures["by_seed"].values())
