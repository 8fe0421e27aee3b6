"""The cost model: what one Whisper encoder pass and one decode cost on this machine.

Measured in-process, on real speech, with the model the server serves, so the capacity figures
can be read against what the machine could do at best:

* encoder passes over Whisper's fixed 30 s input: 1 vs all intra-op threads, batch 1/2/4, and
  several single-threaded workers on one set of weights (CTranslate2 ``inter_threads``) run
  concurrently;
* whole decodes (``WhisperModel.transcribe`` on one window) by window length: beam search with
  temperature fallback and word times (a final decode), greedy without fallback, with and
  without word times (partial decodes); the first two also as the server decodes a live
  window with ``--encoder-pad 10``: its encoder on the window and 10 s of padding
  (``_short``, `encoder_context`);
* the log-mel features.

From these, the machine's **encoder-bound capacity** ``B``: encoder passes per second with the
best worker layout, times one second: the number of streams it could update once a second if
decoding were free. Each figure is the median of ``repeats`` runs after one warm-up.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np

from whisperwire.engine import FALLBACK_TEMPERATURES

SAMPLE_RATE = 16000
SHORT_PAD_S = 10.0  # the `_short` decodes: the window and this much padding (--encoder-pad)
WINDOWS_S = (2.0, 10.0, 25.0)
DECODES = {
    "beam5_fallback_words": {"beam_size": 5, "temperature": FALLBACK_TEMPERATURES, "words": True},
    "greedy_words": {"beam_size": 1, "temperature": 0.0, "words": True},
    "greedy": {"beam_size": 1, "temperature": 0.0, "words": False},
    "beam5_fallback_words_short": {
        "beam_size": 5,
        "temperature": FALLBACK_TEMPERATURES,
        "words": True,
        "short": True,
    },
    "greedy_words_short": {"beam_size": 1, "temperature": 0.0, "words": True, "short": True},
}


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: lazy allocations, caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _features(model: Any, audio: np.ndarray, batch: int) -> Any:
    import ctranslate2

    samples = np.zeros(model.feature_extractor.n_samples, np.float32)
    samples[: min(len(audio), len(samples))] = audio[: len(samples)]
    mel = model.feature_extractor(samples)[:, : model.feature_extractor.nb_max_frames]
    return ctranslate2.StorageView.from_array(
        np.ascontiguousarray(np.repeat(mel[None], batch, axis=0), dtype=np.float32)
    )


def _concurrent_rate(encode: Callable[[], Any], workers: int, seconds: float) -> float:
    """Encoder passes per second when `workers` Python threads call `encode` at once."""
    done = [0] * workers
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            encode()
            done[i] += 1

    encode()  # warm-up
    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def measure_costs(
    model_path: str, audio: np.ndarray, compute_type: str = "int8", repeats: int = 5
) -> dict[str, Any]:
    """The cost model on `audio` (at least 25 s of speech at 16 kHz); see the module doc."""
    from faster_whisper import WhisperModel

    from whisperwire.encoder_context import ShortContextWhisper

    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    results: dict[str, Any] = {"cores": cores, "compute_type": compute_type, "repeats": repeats}

    encoder: dict[str, Any] = {}
    for threads in thread_counts:
        model = WhisperModel(model_path, device="cpu", compute_type=compute_type,
                             cpu_threads=threads)  # fmt: skip
        for batch in (1, 2, 4):
            features = _features(model, audio, batch)
            seconds = _median_time(lambda m=model, f=features: m.model.encode(f), repeats)
            encoder[f"threads{threads}_batch{batch}"] = {
                "threads": threads,
                "batch": batch,
                "seconds": round(seconds, 4),
                "per_window_s": round(seconds / batch, 4),
            }
        del model
    results["encoder"] = encoder
    results["t_enc"] = encoder[f"threads{cores}_batch1"]["seconds"]

    # Workers: `cores // threads` single model replicas on shared weights, called at once.
    layouts: dict[str, Any] = {}
    for threads in thread_counts:
        workers = max(1, cores // threads)
        model = WhisperModel(model_path, device="cpu", compute_type=compute_type,
                             cpu_threads=threads, num_workers=workers)  # fmt: skip
        features = _features(model, audio, 1)
        rate = _concurrent_rate(lambda m=model, f=features: m.model.encode(f), workers,
                                seconds=max(4.0, repeats * 1.5))  # fmt: skip
        layouts[f"{workers}x{threads}"] = {
            "workers": workers,
            "threads": threads,
            "windows_per_s": round(rate, 3),
        }
        del model
    results["layouts"] = layouts
    best = max(layouts.values(), key=lambda layout: layout["windows_per_s"])
    results["best_layout"] = f"{best['workers']}x{best['threads']}"
    results["B"] = round(best["windows_per_s"] * 1.0, 2)

    model = ShortContextWhisper(
        model_path, device="cpu", compute_type=compute_type, cpu_threads=cores, pad_s=SHORT_PAD_S
    )
    results["logmel_s"] = round(
        _median_time(lambda: model.feature_extractor(audio[: 30 * SAMPLE_RATE]), repeats), 4
    )
    decodes: dict[str, Any] = {}
    for name, options in DECODES.items():
        for window in WINDOWS_S:
            clip = audio[: int(window * SAMPLE_RATE)]

            def decode(clip: np.ndarray = clip, options: dict[str, Any] = options) -> None:
                with model.short_context() if options.get("short") else nullcontext():
                    segments, _ = model.transcribe(
                        clip,
                        language="en",
                        beam_size=options["beam_size"],
                        temperature=options["temperature"],
                        word_timestamps=options["words"],
                        condition_on_previous_text=False,
                        vad_filter=False,
                    )
                    list(segments)

            decodes[f"{name}_{window:g}s"] = {
                "decode": name,
                "window_s": window,
                "seconds": round(_median_time(decode, repeats), 4),
            }
    results["decodes"] = decodes
    return results


def markdown(costs: dict[str, Any]) -> list[str]:
    """The cost model as Markdown lines (a section of results.md)."""
    lines = [
        "## Cost model",
        "",
        f"In-process, {costs['compute_type']}, {costs['cores']} cores, median of "
        f"{costs['repeats']}. Encoder-bound capacity **B = {costs['B']}** streams "
        f"(best layout {costs['best_layout']}: workers x threads); "
        f"t_enc = {costs['t_enc']:.3f} s (one pass, all cores); log-mel of 30 s "
        f"{costs['logmel_s']:.3f} s.",
        "",
        "| encoder | threads | batch | s per call | s per window |",
        "|---|---|---|---|---|",
    ]
    for row in costs["encoder"].values():
        lines.append(
            f"| | {row['threads']} | {row['batch']} | {row['seconds']:.3f} | "
            f"{row['per_window_s']:.3f} |"
        )
    lines += ["", "| workers x threads | windows per s |", "|---|---|"]
    for name, row in costs["layouts"].items():
        lines.append(f"| {name} | {row['windows_per_s']:.2f} |")
    windows = sorted({row["window_s"] for row in costs["decodes"].values()})
    lines += [
        "",
        "| decode | " + " | ".join(f"{w:g} s window" for w in windows) + " |",
        "|---|" + "---|" * len(windows),
    ]
    for name in DECODES:
        cells = [
            f"{costs['decodes'][f'{name}_{w:g}s']['seconds']:.3f}"
            for w in windows
            if f"{name}_{w:g}s" in costs["decodes"]
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]
