"""whisper.cpp ggml model files written from a Hugging Face checkpoint, for tests.

The writer follows whisper.cpp's converters (``models/convert-h5-to-ggml.py``: OpenAI tensor
names, float16 matrices, float32 biases, norms, positional embeddings and conv biases as [n, 1])
and its quantizer (``examples/quantize``: only 2-D tensors other than the positional embeddings
are quantized, the header's ftype gets 1000 * the format version). Quantized blocks come from
``gguf.quants``, an implementation of ggml's block formats independent of whisperwire's reader.
It is written on its own, not from whisperwire's reader, so that the two check each other.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

# ggml tensor types and the header's ftype (ggml_ftype) of a file quantized to each.
TENSOR_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}
QNT_VERSION = 2
NOT_QUANTIZED = {"encoder.positional_embedding", "decoder.positional_embedding"}

_LAYER = {
    "self_attn_layer_norm": "attn_ln", "encoder_attn_layer_norm": "cross_attn_ln",
    "final_layer_norm": "mlp_ln", "fc1": "mlp.0", "fc2": "mlp.2",
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
    "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
}  # fmt: skip
_TOP = {
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}


def openai_name(hf_name: str) -> str | None:
    """``model.encoder.layers.0.fc1.weight`` -> ``encoder.blocks.0.mlp.0.weight``; None: skip."""
    name = hf_name.removeprefix("model.")
    if name.startswith("proj_out"):
        return None  # tied to the token embedding
    if name in _TOP:
        return _TOP[name]
    if ".conv" in name:
        return name
    side, _, index, rest = name.split(".", 3)
    module, param = rest.rsplit(".", 1)
    return f"{side}.blocks.{index}.{_LAYER[module]}.{param}"


def gpt2_bytes() -> dict[str, int]:
    """GPT-2's printable character -> byte."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


def vocabulary(tokenizer_json: Path, with_eot: bool = False) -> list[bytes]:
    """The BPE tokens by id as bytes (``gpt2.tiktoken``'s 50256; the h5 converter adds one)."""
    vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    decode = gpt2_bytes()
    by_id = {i: t for t, i in vocab.items()}
    count = 50257 if with_eot else 50256
    return [
        by_id[i].encode() if by_id[i].startswith("<|") else bytes(decode[c] for c in by_id[i])
        for i in range(count)
    ]


def mel_filters(n_mels: int) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    return np.asarray(WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T, np.float32)


def write_ggml(checkpoint: Path, out: Path, wtype: str = "f16", with_eot: bool = False) -> Path:
    """``checkpoint`` (safetensors) as a whisper.cpp ggml file of weight type ``wtype``."""
    from safetensors.numpy import load_file

    config = json.loads((checkpoint / "config.json").read_text())
    state = load_file(str(checkpoint / "model.safetensors"))
    tokens = vocabulary(checkpoint / "tokenizer.json", with_eot)
    filters = mel_filters(config["num_mel_bins"])
    return write_ggml_state(state, config, tokens, filters, out, wtype)


def write_ggml_state(
    state: dict[str, np.ndarray],
    config: dict[str, int],
    tokens: list[bytes],
    filters: np.ndarray,
    out: Path,
    wtype: str = "f16",
) -> Path:
    """Hugging Face-named weights, their config's sizes, the vocabulary and mel filters."""
    ftype = FILE_TYPES[wtype] + (QNT_VERSION * 1000 if wtype not in ("f16", "f32") else 0)
    hparams = [config["vocab_size"], config["max_source_positions"], config["d_model"],
               config["encoder_attention_heads"], config["encoder_layers"],
               config["max_target_positions"], config["d_model"],
               config["decoder_attention_heads"], config["decoder_layers"],
               config["num_mel_bins"], ftype]  # fmt: skip
    with out.open("wb") as fh:
        fh.write(struct.pack("<i", 0x67676D6C))
        fh.write(struct.pack("<11i", *hparams))
        fh.write(struct.pack("<ii", *filters.shape))
        fh.write(filters.astype("<f4").tobytes())
        fh.write(struct.pack("<i", len(tokens)))
        for token in tokens:
            fh.write(struct.pack("<i", len(token)) + token)
        for hf_name, tensor in state.items():
            name = openai_name(hf_name)
            if name is not None:
                _write_tensor(fh, name, np.asarray(tensor, np.float32), wtype)
    return out


def _write_tensor(fh: BinaryIO, name: str, data: np.ndarray, wtype: str) -> None:
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        data = data.reshape(data.shape[0], 1)  # [n, 1], and float32 like the other biases
    small = data.ndim < 2 or name in NOT_QUANTIZED or name.endswith(".bias")
    if wtype == "f32" or small:
        kind, payload = "f32", data.astype("<f4").tobytes()
    elif wtype == "f16" or data.ndim != 2:  # the quantizer keeps 3-D conv weights in f16
        kind, payload = "f16", data.astype("<f2").tobytes()
    else:
        from gguf import GGMLQuantizationType, quants

        kind = wtype
        blocks = quants.quantize(data, GGMLQuantizationType[wtype.upper()])
        payload = np.ascontiguousarray(blocks).tobytes()
    encoded = name.encode()
    fh.write(struct.pack("<iii", data.ndim, len(encoded), TENSOR_TYPES[kind]))
    fh.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
    fh.write(encoded)
    fh.write(payload)
