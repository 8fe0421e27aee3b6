"""The benchmark harness in its tiny mode: every figure is present and sane (never its speed),
and whisperwire invents no words on silence or noise.

Runs `benchmarks/run.py --tiny` as a user would (real whisperwire server, a second one with
LocalAgreement-2 commits given with `--also`, real baseline server, real speech at real-time
pace): 2 short clips, N = 1, 2, a 15 s long-session stand-in (the long file's first
utterance) and 4 s of silence / white / pink noise for each system. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import AUDIO, REPO, audio_root

from whisperwire.bench.metrics import tokens

SYSTEMS = ("whisperwire", "agreement", "baseline")  # agreement: the --also system
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    audio_root()
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable, str(REPO / "benchmarks" / "run.py"), "--tiny", "--no-progress",
        "--out", str(out), "--audio", str(AUDIO), "--cache", str(out / "offline.json"),
        "--also", "agreement=--commit agreement",
    ]  # fmt: skip
    if not HAS_MATPLOTLIB:
        command.append("--no-plots")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return out, json.loads((out / "results.json").read_text())


def test_the_cost_model_is_measured(run: tuple[Path, dict[str, Any]]) -> None:
    costs = run[1]["costs"]
    assert _number(costs["t_enc"]) and costs["t_enc"] > 0
    assert _number(costs["B"]) and costs["B"] > 0
    layout = costs["layouts"][costs["best_layout"]]
    assert costs["B"] == pytest.approx(layout["windows_per_s"], rel=0.01)
    assert {row["batch"] for row in costs["encoder"].values()} == {1, 2, 4}
    windows = {row["window_s"] for row in costs["decodes"].values()}
    assert windows == {2.0, 10.0, 25.0}
    assert all(_number(row["seconds"]) and row["seconds"] > 0 for row in costs["decodes"].values())


def test_every_output_file_is_written(run: tuple[Path, dict[str, Any]]) -> None:
    out, results = run
    markdown = (out / "results.md").read_text()
    for heading in ("## Summary", "## Goals", "## Cost model", "## Capacity", "## Long"):
        assert heading in markdown
    assert "- **agreement**: `" in markdown and "--commit agreement" in markdown
    if HAS_MATPLOTLIB:
        for name in ("latency_vs_streams.png", "lag_cdf.png", "rss.png"):
            png = out / name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
            assert f"]({name})" in markdown
    assert results["failures"] == []
    assert results["mode"] == "tiny"
    assert set(results["systems"]) == set(SYSTEMS)
    for key in ("cpu", "cores", "faster-whisper", "load_average_start"):
        assert key in results["machine"]
    for key in ("beam_size", "frame_s", "n", "clips", "server_args"):
        assert key in results["settings"]
    assert {"final_lag", "first_seen_lag", "sent_time", "wer"} <= set(results["definitions"])


@pytest.mark.parametrize("system", SYSTEMS)
def test_accuracy_and_one_stream_latency(run: tuple[Path, dict[str, Any]], system: str) -> None:
    acc = run[1]["systems"][system]["accuracy"]
    assert acc["sessions"] == 2 and not acc["session_errors"]
    for key in ("wer_stream", "wer_offline", "wer_ratio"):
        assert _number(acc[key]), key
    assert 0 <= acc["wer_offline"] < 0.6 and 0 <= acc["wer_stream"] < 0.9
    latency = acc["latency"]
    assert latency["matched_words"] >= 0.6 * latency["reference_words"] > 0
    for kind in ("final", "first_seen"):
        block = latency[kind]
        assert block["n"] == latency["matched_words"]
        assert 0 < block["p50"] <= block["p95"] <= block["max"], (kind, block)
    assert latency["first_seen"]["p50"] <= latency["final"]["p50"]
    assert acc["time_to_first_text"]["p50"] > 0
    assert len(acc["lags"]["final"]) == latency["matched_words"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_capacity_rows(run: tuple[Path, dict[str, Any]], system: str) -> None:
    rows = run[1]["systems"][system]["capacity"]
    assert [r["n"] for r in rows] == [1, 2]
    for row in rows:
        assert len(row["stream_s"]) == row["n"] and not row["session_errors"]
        final = row["latency"]["final"]
        assert 0 < final["p50"] <= final["p95"], row
        assert isinstance(row["realtime_kept"], bool)
        assert _number(row["lag_slope"]) and _number(row["wer_stream"])
        assert _number(row["cpu_per_audio_s"]) and row["cpu_per_audio_s"] > 0


@pytest.mark.parametrize("system", SYSTEMS)
def test_long_session_samples_rss(run: tuple[Path, dict[str, Any]], system: str) -> None:
    long = run[1]["systems"][system]["long"]
    assert not long["session_errors"]
    assert len(long["rss_mb"]) >= 3
    assert all(mb > 50 for _, mb in long["rss_mb"])  # a loaded model is never this small
    times = [t for t, _ in long["rss_mb"]]
    assert times == sorted(times)
    assert _number(long["rss_growth_mb"]) and _number(long["wer_stream"])
    assert long["latency"]["final"]["p50"] > 0
    assert long["latency_first_window"]["final"]["n"] > 0


@pytest.mark.parametrize("system", SYSTEMS)
def test_no_words_on_silence_or_noise(run: tuple[Path, dict[str, Any]], system: str) -> None:
    noise = run[1]["systems"][system]["noise"]
    assert set(noise) == {"silence", "white", "pink"}
    for kind, entry in noise.items():
        assert entry["audio_s"] == 4.0 and not entry["session_errors"], (kind, entry)
        if system == "baseline":  # no VAD: it may well invent words; they are counted
            assert entry["final_words"] == len(tokens(entry["text"])), (kind, entry)
        else:  # whisperwire shows no word, final or partial, on audio without speech
            assert entry["final_words"] == 0 and entry["text"] == "", (kind, entry)
            assert entry["max_partial_words"] == 0, (kind, entry)


def test_goals_are_all_evaluated(run: tuple[Path, dict[str, Any]]) -> None:
    results = run[1]
    goals = {g["goal"]: g for g in results["goals"]}
    assert len(goals) == 12
    t_enc, capacity_b = results["costs"]["t_enc"], results["costs"]["B"]
    # bounds come from the cost model of the same run
    p50 = goals["final lag p50, one stream (s)"]
    assert p50["target"] == f"<= {round(1 + t_enc, 3):g}"
    assert goals["real-time streams at final lag p95 <= 2 s + 2 t_enc"]["target"] == (
        f">= {round(0.8 * capacity_b, 2):g}"
    )
    overload = goals.pop("at 2 B streams: the rest refused, the admitted kept (1 = yes)")
    if max(results["settings"]["n"]) < 2 * capacity_b:  # the tiny run tries N = 1, 2
        assert overload["value"] is None and "no N >=" in overload["note"]
    for goal in goals.values():
        assert goal["value"] is not None, goal
        assert isinstance(goal["met"], bool), goal


def test_a_short_soak_reports_both_windows_the_short_sessions_and_rss(tmp_path: Path) -> None:
    """The soak scenario (an hour in the README's run) at one minute: the long session's
    first and last windows, the short sessions beside it, RSS over the session."""
    command = [
        sys.executable, str(REPO / "benchmarks" / "run.py"), "--tiny", "--no-progress",
        "--no-baseline", "--no-plots", "--scenarios", "soak", "--soak-minutes", "1",
        "--soak-every", "20", "--out", str(tmp_path), "--audio", str(AUDIO),
        "--cache", str(tmp_path / "offline.json"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    soak = json.loads((tmp_path / "results.json").read_text())["systems"]["whisperwire"]["soak"]
    assert 60 <= soak["audio_s"] <= 120  # whole files: the shortest long-form file
    assert soak["wer_stream"] <= 2 * soak["wer_offline"] + 0.05, soak["wer_stream"]
    first, last = soak["latency_first_window"]["final"], soak["latency_last_window"]["final"]
    assert first["n"] > 0 and last["n"] > 0 and first["p50"] > 0 and last["p50"] > 0
    assert soak["short_sessions"] == int(soak["audio_s"] // 20) - 1
    admitted = soak["short_sessions"] - soak["short_refused"]
    assert admitted >= 1 and soak["short_latency"]["final"]["n"] > 0
    assert soak["short_wer_stream"] <= 2 * soak["short_wer_offline"] + 0.1
    assert len(soak["rss_mb"]) >= 3 and all(mb > 50 for _, mb in soak["rss_mb"])
    assert "## Soak" in (tmp_path / "results.md").read_text()
