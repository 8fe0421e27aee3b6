#!/usr/bin/env python3
"""Decode the long-form file one utterance at a time, as a stream at its best could.

    python benchmarks/utterance_oracle.py                      # each utterance alone
    python benchmarks/utterance_oracle.py --left 10 --at-utterances
    python benchmarks/utterance_oracle.py --left 5 --right 1.0

The 13.3-minute file is the 100 test-other clips in a row, 0.3 s apart (`segments.tsv` gives
each one's times). Each utterance is decoded once, whole, with the offline reference's
options (tiny.en int8, beam 5, temperature fallback, word times, no VAD), from `--left`
seconds before it (from the start of an earlier utterance with `--at-utterances`, else
wherever that falls) to `--right` seconds after its end, at most 29.5 s in all; the words
whose middle lies inside the utterance (0.15 s either side) are its transcript. The WER is
scored with the bench's normaliser, the offline figure (the whole file in faster-whisper's
30 s windows) from the bench's cache. It says what a stream would get if it waited for every
utterance to end and decoded it with that much audio around it: the lag no live bound
allows, and no streaming loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

try:
    import whisperwire  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from whisperwire.audio import decode_file
from whisperwire.bench import corpus, metrics
from whisperwire.bench.inputs import default_cache
from whisperwire.engine import bundled_model_path

RATE = corpus.SAMPLE_RATE
EDGE_S = 0.15  # a word belongs to an utterance when its middle lies this close to it
SEAM_S = 0.05  # a word is new when its middle lies past the last final word's end, less this


def decode(
    model: Any, audio: np.ndarray, begin: float, stop: float, beam: int
) -> list[tuple[str, float, float]]:
    """The words of audio[begin:stop] (word, start, end in seconds from `begin`)."""
    segments, _ = model.transcribe(
        audio[int(begin * RATE) : int(stop * RATE)],
        language="en",
        beam_size=beam,
        temperature=0.0 if beam == 1 else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        word_timestamps=True,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    return [(w.word, w.start, w.end) for s in segments for w in (s.words or [])]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--audio", type=Path, default=None, help="the shared test-audio folder")
    p.add_argument("--left", type=float, default=0.0, help="seconds of audio before each")
    p.add_argument("--right", type=float, default=corpus.GAP_S, help="seconds of audio after each")
    p.add_argument("--at-utterances", action="store_true",
                   help="start the left context at an earlier utterance's start")  # fmt: skip
    p.add_argument("--guard", type=float, default=None,
                   help="commit as a stream would: decode the utterance so far every --step "
                   "seconds (greedy) and make a word final once it ends this long before the "
                   "audio decoded; the rest from the whole decode")  # fmt: skip
    p.add_argument("--step", type=float, default=0.5, help="seconds between two prefixes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON with each utterance's text")
    args = p.parse_args()

    from faster_whisper import WhisperModel

    root = args.audio or corpus.default_audio_root()
    utts = corpus.long_utterances(root)
    audio = decode_file((root / corpus.LONGFORM / corpus.LONG_FILE).read_bytes())
    total = len(audio) / RATE
    model = WhisperModel(str(bundled_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=args.threads)  # fmt: skip
    hypotheses: list[str] = []
    lags: list[float] = []
    for start, end, _ in utts:
        left = min(args.left, max(0.0, 29.5 - (end - start) - args.right))
        begin = start - left
        if args.at_utterances:
            begin = min([s for s, _, _ in utts if start - left <= s <= start] or [start])
        begin -= corpus.GAP_S
        begin, stop = max(0.0, begin), min(total, end + args.right)
        lo, hi = start - begin - EDGE_S, end - begin + EDGE_S
        final: list[tuple[str, float, float]] = []  # (word, its end, the audio's end), window time
        if args.guard is not None:
            seen = start - begin + args.step
            while seen < stop - begin:
                for word, word_start, word_end in decode(model, audio, begin, begin + seen, 1):
                    done = final[-1][1] if final else lo
                    mid = (word_start + word_end) / 2
                    if word_end <= seen - args.guard and mid > done - SEAM_S and lo <= mid <= hi:
                        final.append((word, word_end, seen))
                seen += args.step
        done = final[-1][1] if final else lo  # the whole decode adds what follows it
        for word, word_start, word_end in decode(model, audio, begin, stop, 5):
            mid = (word_start + word_end) / 2
            if lo <= mid <= hi and mid > done - SEAM_S:
                final.append((word, word_end, stop - begin))
        hypotheses.append("".join(w for w, _, _ in final))
        lags += [seen - word_end for _, word_end, seen in final]
    clip = corpus.long_clip(root, None)
    offline = corpus.OfflineReference(default_cache(), beam_size=5).get(clip).text
    figures = {
        "wer": metrics.wer([u[2] for u in utts], hypotheses),
        "offline_wer": metrics.wer([clip.reference], [offline]),
        "word_wait_p50": metrics.percentile(lags, 50),
        "word_wait_p95": metrics.percentile(lags, 95),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps(figures))
    if args.out:
        args.out.write_text(json.dumps({**figures, "texts": hypotheses}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
