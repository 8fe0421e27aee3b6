"""Streaming Silero VAD (the ONNX model that ships inside faster-whisper).

faster-whisper runs Silero over a whole file at once; here the LSTM state and the 64-sample
context are carried across calls so that a live stream can be scored frame by frame. One
ONNX session is shared by every stream (onnxruntime's `run` is thread-safe); each stream
owns only its small state.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

CHUNK = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64


@lru_cache(maxsize=1)
def _session():  # type: ignore[no-untyped-def]
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    path = f"{get_assets_path()}/silero_vad_v6.onnx"
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)


_load_lock = threading.Lock()


def load() -> None:
    """Load the shared model now (at server start) instead of on the first frame."""
    with _load_lock:
        _session()


class StreamingVad:
    """Feed 16 kHz float32 audio of any length; get one speech probability per 512 samples."""

    def __init__(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every whole 512-sample chunk now available (the rest waits)."""
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(audio) // CHUNK
        self._pending = audio[n * CHUNK :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        chunks = audio[: n * CHUNK].reshape(n, CHUNK)
        contexts = np.empty((n, CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        if n > 1:
            contexts[1:] = chunks[:-1, -CONTEXT:]
        self._context = chunks[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, chunks], axis=1)
        # The model is recurrent over the batch axis: it carries h/c from row to row.
        probs, self._h, self._c = _session().run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(probs, dtype=np.float32).reshape(-1)[:n]


def has_speech(samples: np.ndarray) -> bool:
    """Does Silero hear any speech in this audio? faster-whisper's whole-file VAD with its
    defaults (0.4 s per 3 min of audio here). Blocking: call it from a worker."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(samples, VadOptions()))
