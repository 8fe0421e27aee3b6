#!/usr/bin/env python3
"""Replay the long-form file through a peer, ufal/whisper_streaming, on a virtual clock.

    git clone https://github.com/ufal/whisper_streaming /tmp/whisper_streaming
    python benchmarks/peer_whisper_streaming.py --checkout /tmp/whisper_streaming
    python benchmarks/peer_whisper_streaming.py --checkout /tmp/whisper_streaming --cost-aware

The peer's own `OnlineASRProcessor` (LocalAgreement-2 over consecutive decodes, a 200-character
prompt of committed text, the buffer trimmed at Whisper's segment ends once past 15 s) runs
on the model `whisperwire serve` uses by default (tiny.en, CPU int8), with the peer's decode
options (beam 5, word times, conditioning), fed `--chunk` seconds of audio per step as its
`--comp_unaware` mode does. `--cost-aware` makes each decode take the time
`whisperwire replay`'s cost model gives a beam-5 decode of its buffer, and the next step takes
all the audio that arrived meanwhile (the peer's live mode on this kind of machine). The WER
uses the bench's normaliser and the offline reference `whisperwire replay` compares with; a
word's lag is when the step that committed it ended, minus the word's end.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

try:
    import whisperwire  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from whisperwire.audio import decode_file
from whisperwire.bench import corpus, metrics
from whisperwire.bench.inputs import default_cache
from whisperwire.bench.replay import DecodeCost
from whisperwire.engine import bundled_model_path

RATE = 16000


def _load(path: str, sr: int = RATE, dtype: object = None) -> tuple[np.ndarray, int]:
    return decode_file(Path(path).read_bytes()), RATE


def _peer(checkout: Path) -> types.ModuleType:
    """whisper_online.py, which imports librosa only to read files and soundfile only for
    the OpenAI backend: both stand in for what this replay needs."""
    sys.modules.setdefault("librosa", types.SimpleNamespace(load=_load))  # type: ignore[arg-type]
    sys.modules.setdefault("soundfile", types.ModuleType("soundfile"))
    sys.path.insert(0, str(checkout))
    import whisper_online  # type: ignore[import-not-found]

    return whisper_online


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", type=Path, required=True, help="a whisper_streaming clone")
    p.add_argument("--audio", type=Path, default=None, help="the shared test-audio folder")
    p.add_argument("--seconds", type=float, default=None, help="the file's first S seconds")
    p.add_argument("--chunk", type=float, default=1.0, help="the peer's --min-chunk-size")
    p.add_argument("--trim", type=float, default=15.0, help="the peer's --buffer_trimming_sec")
    p.add_argument("--beam", type=int, default=5, help="beam size (the peer's: 5)")
    p.add_argument("--no-prompt", action="store_true", help="decode without the peer's prompt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cost-aware", action="store_true", help="decodes take virtual time")
    p.add_argument("--out", type=Path, default=None, help="JSON with the transcript")
    args = p.parse_args()

    wo = _peer(args.checkout)
    from faster_whisper import WhisperModel

    class CpuASR(wo.FasterWhisperASR):  # type: ignore[misc,name-defined]
        """The peer's faster-whisper backend on the CPU (its own loads float16 on CUDA)."""

        def load_model(self, modelsize=None, cache_dir=None, model_dir=None):  # type: ignore[no-untyped-def]
            path = str(bundled_model_path())
            return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=args.threads)

        def transcribe(self, audio, init_prompt=""):  # type: ignore[no-untyped-def]
            segments, _ = self.model.transcribe(
                audio,
                language="en",
                initial_prompt="" if args.no_prompt else init_prompt,
                beam_size=args.beam,
                word_timestamps=True,
                condition_on_previous_text=True,
            )
            return list(segments)

    root = args.audio or corpus.default_audio_root()
    clip = corpus.long_clip(root, args.seconds)
    audio = decode_file(clip.path.read_bytes())
    if clip.end is not None:
        audio = audio[: int(clip.end * RATE)]
    online = wo.OnlineASRProcessor(
        CpuASR(modelsize="tiny.en", lan="en"), None, ("segment", args.trim)
    )
    cost = DecodeCost()
    lags: list[float] = []
    pos, clock, decodes = 0, 0.0, 0
    while pos < len(audio):
        clock = max(clock, pos / RATE + args.chunk)  # the step waits for a chunk of audio
        end = min(len(audio), int(round(clock * RATE)))
        online.insert_audio_chunk(audio[pos:end])
        pos, before = end, len(online.commited)
        window = len(online.audio_buffer) / RATE
        online.process_iter()
        decodes += 1
        took = cost.thorough(window) if args.cost_aware else 0.0
        clock = pos / RATE + took
        lags += [clock - word_end for _, word_end, _ in online.commited[before:]]
    rest = online.finish()  # the words no second decode confirmed, as the peer ends
    hypothesis = "".join(text for _, _, text in online.commited) + rest[2]
    offline = corpus.OfflineReference(default_cache(), beam_size=5).get(clip).text
    figures = {
        "wer": metrics.wer([clip.reference], [hypothesis]),
        "offline_wer": metrics.wer([clip.reference], [offline]),
        "word_lag_p50": metrics.percentile(lags, 50),
        "word_lag_p95": metrics.percentile(lags, 95),
        "decodes": decodes,
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps(figures))
    if args.out:
        args.out.write_text(json.dumps({**figures, "text": hypothesis}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
