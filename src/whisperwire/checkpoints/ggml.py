"""whisper.cpp's ggml model files: read the header, the vocabulary and the tensors, dequantized.

The layout (whisper.cpp's ``models/convert-*-to-ggml.py`` write it, its loader reads it), all
little-endian: the magic ``0x67676d6c``; eleven int32 hyper-parameters (n_vocab, n_audio_ctx,
n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer,
n_mels, ftype); the mel filters (int32 n_mel, int32 n_fft, n_mel * n_fft float32); the
vocabulary (int32 count, then per token an int32 length and its bytes); then the tensors to the
end of the file: int32 n_dims, int32 name length, int32 type, n_dims int32 sizes (fastest first),
the name, the data. Tensor names are OpenAI Whisper's (``encoder.blocks.0.attn.query.weight``).

Quantized tensors hold blocks of 32 weights along a row, ggml's formats; the `gguf` package
dequantizes them (into float16: every weight type whisperwire serves at is float16 or coarser).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisperwire.checkpoints.errors import CheckpointError, reason

MAGIC = 0x67676D6C  # "ggml"
QNT_VERSION_FACTOR = 1000  # whisper.cpp's quantizer stores ftype + 1000 * format version
QNT_VERSION = 2  # the block formats below; older quantized files used others
HPARAMS = (
    "n_vocab",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
    "n_mels",
    "ftype",
)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
TYPE_NAMES = {F32: "f32", F16: "f16", Q4_0: "q4_0", Q4_1: "q4_1", Q5_0: "q5_0", Q5_1: "q5_1",
              Q8_0: "q8_0"}  # fmt: skip
QK = 32  # weights per quantized block
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q8_0: 34}
N_VOCAB_ENGLISH = 51864  # English-only Whisper; multilingual: 51865 (v1, v2), 51866 (v3)
N_VOCAB_MAX = 51866


@dataclass
class GgmlTensor:
    name: str
    ttype: int
    shape: tuple[int, ...]  # numpy order (slowest first): the reverse of ggml's sizes
    data: memoryview  # the raw bytes in the file

    def array(self) -> np.ndarray:
        """The weights: float32 and float16 as stored, quantized types as float16."""
        if self.ttype == F32:
            return np.frombuffer(self.data, dtype="<f4").reshape(self.shape)
        if self.ttype == F16:
            return np.frombuffer(self.data, dtype="<f2").reshape(self.shape)
        return dequantize(self.ttype, self.data).reshape(self.shape)


@dataclass
class GgmlModel:
    path: Path
    hparams: dict[str, int]
    qnt_version: int
    mel_filters: np.ndarray  # (n_mel, n_fft)
    tokens: list[bytes]  # the file's vocabulary, by id (BPE tokens, maybe <|endoftext|>)
    tensors: dict[str, GgmlTensor] = field(default_factory=dict)

    @property
    def multilingual(self) -> bool:
        return self.hparams["n_vocab"] > N_VOCAB_ENGLISH  # whisper.cpp: n_vocab >= 51865

    def types(self) -> set[str]:
        return {TYPE_NAMES[t.ttype] for t in self.tensors.values()}


class _Reader:
    def __init__(self, path: Path, buffer: memoryview) -> None:
        self.path, self.buffer, self.offset = path, buffer, 0

    def left(self) -> int:
        return len(self.buffer) - self.offset

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or size > self.left():
            raise CheckpointError(
                f"ggml file {self.path} is truncated: {what} needs {size} bytes, "
                f"{self.left()} are left at offset {self.offset}"
            )
        chunk = self.buffer[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def ints(self, count: int, what: str) -> list[int]:
        return [int(v) for v in np.frombuffer(self.take(4 * count, what), dtype="<i4")]


def read_ggml(path: Path) -> GgmlModel:
    """Parse a whisper.cpp ggml file (memory-mapped; tensor data is read lazily).

    Raises :class:`CheckpointError` for a file that is not ggml, is truncated or holds a tensor
    type this module cannot dequantize. The model's shape is checked by the caller."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise CheckpointError(f"ggml file {path} is empty")
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {reason(exc)}") from exc
    reader = _Reader(path, memoryview(mapped))
    if reader.left() < 4 or reader.ints(1, "the magic")[0] != MAGIC:
        raise CheckpointError(
            f"{path} is not a whisper.cpp ggml model file (no 'ggml' magic at its start)"
        )
    values = reader.ints(len(HPARAMS), "the hyper-parameters")
    hparams = dict(zip(HPARAMS, values, strict=True))
    qnt_version, hparams["ftype"] = divmod(hparams["ftype"], QNT_VERSION_FACTOR)
    n_mel, n_fft = reader.ints(2, "the mel filter sizes")
    if not (0 < n_mel <= 1024 and 0 < n_fft <= 4096):
        raise CheckpointError(f"ggml file {path} has a damaged mel filter header ({n_mel}x{n_fft})")
    filters = np.frombuffer(reader.take(4 * n_mel * n_fft, "the mel filters"), dtype="<f4")
    (n_tokens,) = reader.ints(1, "the vocabulary size")
    if not 0 < n_tokens <= N_VOCAB_MAX:
        raise CheckpointError(f"ggml file {path} has a damaged vocabulary ({n_tokens} tokens)")
    tokens = []
    for index in range(n_tokens):
        (length,) = reader.ints(1, f"token {index}")
        tokens.append(bytes(reader.take(length, f"token {index}")))
    model = GgmlModel(path, hparams, qnt_version, filters.reshape(n_mel, n_fft), tokens)
    for tensor in _tensors(reader):
        if tensor.name in model.tensors:
            raise CheckpointError(f"ggml file {path} holds tensor {tensor.name} twice")
        model.tensors[tensor.name] = tensor
    quantized = {t.ttype for t in model.tensors.values()} - {F32, F16}
    if quantized and qnt_version != QNT_VERSION:
        raise CheckpointError(
            f"ggml file {path} is quantized in an old ggml format (version {qnt_version}); "
            f"quantize the f16 model again with a current whisper.cpp"
        )
    return model


def _tensors(reader: _Reader) -> Iterator[GgmlTensor]:
    while reader.left() > 0:
        n_dims, name_len, ttype = reader.ints(3, "a tensor header")
        if not (1 <= n_dims <= 4 and 0 < name_len <= 512):
            raise CheckpointError(
                f"ggml file {reader.path} has a damaged tensor header at offset {reader.offset}"
            )
        dims = reader.ints(n_dims, "a tensor header")
        name = bytes(reader.take(name_len, "a tensor name")).decode("utf-8", "replace")
        if ttype not in TYPE_NAMES:
            raise CheckpointError(
                f"ggml file {reader.path}: tensor {name} has type {ttype}, which whisperwire "
                f"cannot read (supported: {', '.join(TYPE_NAMES.values())})"
            )
        count = int(np.prod(dims))
        if ttype in (F32, F16):
            nbytes = count * (4 if ttype == F32 else 2)
        elif dims[0] % QK:
            raise CheckpointError(
                f"ggml file {reader.path}: tensor {name} is {TYPE_NAMES[ttype]} with rows of "
                f"{dims[0]}, not a multiple of {QK}"
            )
        else:
            nbytes = count // QK * BLOCK_BYTES[ttype]
        data = reader.take(nbytes, f"tensor {name}")
        yield GgmlTensor(name, ttype, tuple(reversed(dims)), data)


def dequantize(ttype: int, data: memoryview | bytes) -> np.ndarray:
    """ggml blocks of 32 weights -> a flat float16 array (the `gguf` package's numpy code)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as blocks_to_floats

    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, BLOCK_BYTES[ttype])
    return blocks_to_floats(raw, GGMLQuantizationType(ttype)).astype(np.float16).reshape(-1)
