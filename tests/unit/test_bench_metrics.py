"""The benchmark's scoring on hand-made message logs: lags, alignment, summaries, goals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jiwer")
pytest.importorskip("whisper_normalizer")

from whisperwire.bench import metrics as M  # noqa: E402
from whisperwire.bench.goals import goals, max_realtime_streams  # noqa: E402

FRAME = 0.1


def sent_time(t: float) -> float:
    """Frames sent exactly on schedule from t = 100.0: frame k at 100.0 + k * 0.1."""
    return 100.0 + M.frame_index(t, FRAME, 10_000) * FRAME


def msg(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, "text": text}


def test_frame_index_is_the_frame_holding_the_time() -> None:
    assert M.frame_index(0.0, FRAME, 50) == 0
    assert M.frame_index(0.05, FRAME, 50) == 0
    assert M.frame_index(1.0, FRAME, 50) == 9  # audio up to 1.0 s is in frames 0..9
    assert M.frame_index(1.01, FRAME, 50) == 10
    assert M.frame_index(99.0, FRAME, 50) == 49  # clamped to the last frame


def test_final_and_first_seen_lags() -> None:
    reference = [(" Hello,", 0.0, 0.5), (" Mr.", 0.6, 0.9), (" Hale.", 0.9, 1.3)]
    messages = [
        (100.9, msg("partial", "Hello")),
        (101.2, msg("partial", "Hello, mister")),
        (101.6, msg("final", "Hello,")),
        (101.7, msg("partial", "Mr. Hail")),  # a wrong word, later corrected
        (102.5, msg("final", "Mr. Hale.")),
    ]
    line = M.timeline(messages)
    assert line.tokens == ["hello", "mister", "hale"]
    lags, n = M.word_lags(reference, line, sent_time)
    assert n == 3
    by_token = {w.token: w for w in lags}
    # "hello" ends at 0.5 s: frame 4, sent at 100.4
    assert by_token["hello"].first == pytest.approx(0.5)
    assert by_token["hello"].final == pytest.approx(1.2)
    # "mister" ends at 0.9 s: frame 8, sent at 100.8; first shown at 101.2
    assert by_token["mister"].first == pytest.approx(0.4)
    assert by_token["mister"].final == pytest.approx(1.7)
    # "hale" was shown as "hail" first: it is first seen with its final, at 102.5
    assert by_token["hale"].first == pytest.approx(by_token["hale"].final)
    assert line.first_text_at == 100.9


def test_a_common_word_is_not_matched_to_a_later_repeat() -> None:
    messages = [
        (10.0, msg("partial", "the")),
        (11.0, msg("final", "the cat and the dog")),
    ]
    line = M.timeline(messages)
    assert line.first_at == [10.0, 11.0, 11.0, 11.0, 11.0]


def test_unmatched_words_are_not_timed() -> None:
    reference = [(" red", 0.0, 0.3), (" green", 0.3, 0.6), (" blue.", 0.6, 0.9)]
    line = M.timeline([(5.0, msg("final", "Red, blue black."))])
    lags, n = M.word_lags(reference, line, lambda t: 0.0)
    assert n == 3
    assert [(w.token, w.end, w.final) for w in lags] == [("red", 0.3, 5.0), ("blue", 0.9, 5.0)]


def test_wer_and_summary() -> None:
    assert M.wer(["HELLO MISTER HALE"], ["Hello, Mr. Hale."]) == 0.0
    assert M.wer(["A B C D"], ["a b c"]) == pytest.approx(0.25)
    assert M.wer([""], ["x"]) is None
    s = M.summary([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["p50"] == 2.5 and s["max"] == 4.0
    assert M.summary([])["p50"] is None


def test_lag_slope_tells_a_server_that_falls_behind() -> None:
    steady = [M.WordLag("w", t, 0.5, 1.0 + (0.3 if t % 2 else 0.0)) for t in range(40)]
    behind = [M.WordLag("w", t, 0.5, 1.0 + 0.2 * t) for t in range(40)]
    assert abs(M.lag_slope(steady) or 0) < 0.05
    assert M.lag_slope(behind) == pytest.approx(0.2)


def test_max_realtime_streams_stops_at_the_first_failure() -> None:
    def row(n: int, kept: bool, p95: float) -> dict[str, Any]:
        return {"n": n, "realtime_kept": kept, "latency": {"final": {"p95": p95}}}

    rows = [row(1, True, 1.0), row(2, True, 1.5), row(4, True, 2.5), row(8, True, 1.9)]
    assert max_realtime_streams(rows) == 2
    assert max_realtime_streams([row(1, False, 1.0)]) == 0
    assert max_realtime_streams(None) is None


def test_goals_tolerate_missing_scenarios() -> None:
    out = goals({"systems": {"whisperwire": {"accuracy": {"wer_ratio": 1.02}}}})
    assert out[0]["met"] is True
    assert all(g["met"] is None for g in out[1:])


def _capacity_row(n: int, admitted: int, kept: bool, p95: float) -> dict[str, Any]:
    return {
        "n": n, "admitted": admitted, "refused": n - admitted, "realtime_kept": kept,
        "latency": {"final": {"p95": p95}}, "wer_stream": 0.11, "wer_offline": 0.10,
    }  # fmt: skip


def test_goal_bounds_come_from_the_cost_model_of_the_run() -> None:
    results = {
        "costs": {"t_enc": 0.25, "B": 5.0},
        "systems": {
            "whisperwire": {
                "accuracy": {
                    "wer_ratio": 1.12,
                    "latency": {"final": {"p50": 1.2, "p95": 2.6}, "first_seen": {"p50": 0.7}},
                },
                "capacity": [
                    _capacity_row(1, 1, True, 1.5),
                    _capacity_row(4, 4, True, 2.4),
                    _capacity_row(8, 5, True, 2.6),  # admission refused 3
                    _capacity_row(10, 5, True, 2.45),
                ],
                "long": {
                    "wer_stream": 0.09,
                    "wer_offline": 0.08,
                    "latency_first_window": {"final": {"p50": 1.0}},
                    "latency_last_window": {"final": {"p50": 1.3}},
                },  # fmt: skip
            }
        },
    }
    out = {g["goal"]: g for g in goals(results)}
    assert out["streaming WER / offline WER"]["met"] is False  # 1.12 > 1.10
    assert out["final lag p50, one stream (s)"]["target"] == "<= 1.25"  # 1.0 + t_enc
    assert out["final lag p50, one stream (s)"]["met"] is True
    assert out["final lag p95, one stream (s)"]["target"] == "<= 2.5"  # 2.0 + 2 t_enc
    assert out["final lag p95, one stream (s)"]["met"] is False
    assert out["partial (first-seen) lag p50, one stream (s)"]["met"] is True  # 0.7 <= 0.75
    assert out["long session: streaming WER / offline WER"]["value"] == 1.125
    drift = out["long session: last-minute / first-minute final lag p50"]
    assert drift["value"] == 1.3 and drift["met"] is False
    streams = out["real-time streams at final lag p95 <= 2 s + 2 t_enc"]
    assert streams["value"] == 4 and streams["target"] == ">= 4" and streams["met"] is True
    overload = out["at 2 B streams: the rest refused, the admitted kept (1 = yes)"]
    assert overload["value"] == 1 and overload["met"] is True  # N=10: 5 refused, p95 2.45
    assert "N=10: 5 admitted, 5 refused" in overload["note"]


def test_goals_without_a_cost_model_are_not_judged() -> None:
    acc = {"latency": {"final": {"p50": 0.5}}}
    out = {g["goal"]: g for g in goals({"systems": {"whisperwire": {"accuracy": acc}}})}
    p50 = out["final lag p50, one stream (s)"]
    assert p50["value"] == 0.5 and p50["met"] is None and "no cost model" in p50["target"]


def test_a_repeated_clip_is_timed_by_its_own_pass() -> None:
    """The soak sends the same clip twice; each pass's words are timed by the finals that
    came while it was sent, though a longer run of the second pass matches the first."""
    clip = [(" red", 0.0, 0.3), (" green", 0.3, 0.6), (" blue", 0.6, 0.9), (" black", 0.9, 1.2)]
    again = [(w, s + 600.0, e + 600.0) for w, s, e in clip]
    messages = [
        (101.5, msg("final", "red green blue")),  # the first pass lost its last word
        (701.5, msg("final", "red green blue black")),
    ]
    line = M.timeline(messages)
    whole, _ = M.word_lags(clip + again, line, sent_time)
    assert max(w.final for w in whole) > 500  # aligned across the repeat
    lags, n = M.piecewise_word_lags([clip, again], line, sent_time, horizon_s=300.0)
    assert n == 8
    assert [w.token for w in lags] == ["red", "green", "blue"] + ["red", "green", "blue", "black"]
    assert max(w.final for w in lags) < 2.0


def test_every_system_in_a_plot_has_its_own_colour() -> None:
    from whisperwire.bench.plots import colors

    names = ["whisperwire", "previous", "baseline", "w1", "agree"]
    palette = colors(names)
    assert palette["whisperwire"] == "tab:blue" and palette["baseline"] == "tab:orange"
    assert len(set(palette.values())) == len(names)
    many = colors([f"s{i}" for i in range(9)])  # more than the palette: colours repeat, none lack
    assert all(many.values())


def test_the_lag_plot_draws_the_runs_own_p95_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    from whisperwire.bench import plots

    row = {"n": 1, "latency": {"final": {"n": 10, "p50": 1.0, "p95": 2.0}}}
    results = {"costs": {"t_enc": 0.5}, "systems": {"whisperwire": {"capacity": [row]}}}
    goal_lines: list[Any] = []
    draw = plots._latency_vs_streams

    def spy(ax: Any, systems: Any, palette: Any, bound: float | None) -> bool:
        drawn = draw(ax, systems, palette, bound)
        goal_lines.extend(x for x in ax.get_lines() if x.get_label().startswith("goal"))
        return drawn

    monkeypatch.setattr(plots, "_latency_vs_streams", spy)
    assert tmp_path / "latency_vs_streams.png" in plots.plot_all(results, tmp_path)
    (goal,) = goal_lines
    assert list(goal.get_ydata()) == [3.0, 3.0]  # 2 s + 2 x 0.5 s, not a fixed 2 s
    assert "3.00 s" in goal.get_label()
