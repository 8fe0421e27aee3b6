"""A parsed ggml file as a Hugging Face Whisper checkpoint directory, for the checkpoint converter.

The shape is checked against the hyper-parameters first (a shape Whisper does not have is one
error line, before any weights are touched); then OpenAI's tensor names are mapped onto
``WhisperForConditionalGeneration``'s and written to ``model.safetensors`` with ``config.json``,
``generation_config.json``, ``tokenizer.json`` (built from the file's vocabulary) and
``preprocessor_config.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from whisperwire.checkpoints.errors import CheckpointError
from whisperwire.checkpoints.ggml import N_VOCAB_ENGLISH, N_VOCAB_MAX, GgmlModel
from whisperwire.checkpoints.ggml_vocab import build_tokenizer_json

ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
# OpenAI's model sizes by (layers, n_state); a file of one of these shapes takes that model's
# alignment heads (the attention heads word timestamps follow), as a fine-tune keeps its base's.
SIZES = {(4, 384): "tiny", (6, 512): "base", (12, 768): "small", (24, 1024): "medium",
         (32, 1280): "large-v2"}  # fmt: skip


def expected_tensors(
    hp: dict[str, int], ffn: int | None = None
) -> dict[str, tuple[tuple[int, ...], str]]:
    """OpenAI name -> (numpy shape, Hugging Face name) of every tensor a Whisper model has
    (``ffn``: the MLPs' width, 4 * n_state in every OpenAI model)."""
    d, n_mels = hp["n_audio_state"], hp["n_mels"]
    ffn = ffn or 4 * d
    positions = "embed_positions.weight"
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "encoder.positional_embedding": ((hp["n_audio_ctx"], d), f"model.encoder.{positions}"),
        "encoder.conv1.weight": ((d, n_mels, 3), "model.encoder.conv1.weight"),
        "encoder.conv1.bias": ((d,), "model.encoder.conv1.bias"),
        "encoder.conv2.weight": ((d, d, 3), "model.encoder.conv2.weight"),
        "encoder.conv2.bias": ((d,), "model.encoder.conv2.bias"),
        "encoder.ln_post.weight": ((d,), "model.encoder.layer_norm.weight"),
        "encoder.ln_post.bias": ((d,), "model.encoder.layer_norm.bias"),
        "decoder.positional_embedding": ((hp["n_text_ctx"], d), f"model.decoder.{positions}"),
        "decoder.token_embedding.weight": ((hp["n_vocab"], d), "model.decoder.embed_tokens.weight"),
        "decoder.ln.weight": ((d,), "model.decoder.layer_norm.weight"),
        "decoder.ln.bias": ((d,), "model.decoder.layer_norm.bias"),
    }  # fmt: skip
    for side, layers in (("encoder", hp["n_audio_layer"]), ("decoder", hp["n_text_layer"])):
        attentions = [("attn", "self_attn")]
        if side == "decoder":
            attentions.append(("cross_attn", "encoder_attn"))
        for i in range(layers):
            src, dst = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
            blocks = [(f"{a}_ln", f"{h}_layer_norm", (d,)) for a, h in attentions]
            blocks += [("mlp_ln", "final_layer_norm", (d,))]
            for a, h in attentions:
                blocks += [(f"{a}.{o}", f"{h}.{p}", (d, d)) for o, p in ATTENTION.items()]
            blocks += [("mlp.0", "fc1", (ffn, d)), ("mlp.2", "fc2", (d, ffn))]
            for name, hf, shape in blocks:
                out[f"{src}.{name}.weight"] = (shape, f"{dst}.{hf}.weight")
                if not name.endswith(".key"):  # Whisper's key projections have no bias
                    out[f"{src}.{name}.bias"] = ((shape[0],), f"{dst}.{hf}.bias")
    return out


def check_shape(model: GgmlModel) -> dict[str, tuple[tuple[int, ...], str]]:
    """The expected tensors, once the hyper-parameters and every tensor fit a Whisper model."""
    hp, path = model.hparams, model.path

    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"ggml file {path} is not a Whisper model: {problem}")

    if any(value <= 0 for name, value in hp.items() if name != "ftype"):
        raise refuse(f"hyper-parameters {hp}")
    if not N_VOCAB_ENGLISH <= hp["n_vocab"] <= N_VOCAB_MAX:
        raise refuse(
            f"n_vocab is {hp['n_vocab']}; Whisper's is {N_VOCAB_ENGLISH} (English-only), "
            f"51865 or {N_VOCAB_MAX}"
        )
    if hp["n_audio_state"] != hp["n_text_state"]:
        raise refuse(f"n_audio_state {hp['n_audio_state']} != n_text_state {hp['n_text_state']}")
    for side in ("audio", "text"):
        if hp[f"n_{side}_state"] % hp[f"n_{side}_head"]:
            raise refuse(f"n_{side}_state is not a multiple of n_{side}_head")
    if hp["n_mels"] not in (80, 128):
        raise refuse(f"n_mels is {hp['n_mels']}; Whisper's is 80 or 128")
    if model.mel_filters.shape[0] != hp["n_mels"]:
        raise refuse(f"{model.mel_filters.shape[0]} mel filters for n_mels {hp['n_mels']}")
    expected = expected_tensors(hp, ffn_size(model))
    for name, (shape, _) in expected.items():
        tensor = model.tensors.get(name)
        if tensor is None:
            raise refuse(f"it has no tensor {name}")
        found = tensor.shape
        if name.endswith((".conv1.bias", ".conv2.bias")) and found[-1:] == (1,):
            found = found[:-1]  # the converters store conv biases as [n, 1]
        if found != shape:
            raise refuse(f"tensor {name} is {list(tensor.shape)}, expected {list(shape)}")
    extra = sorted(set(model.tensors) - set(expected))
    if extra:
        raise refuse(f"unexpected tensor {extra[0]} ({len(extra)} unknown)")
    return expected


def ffn_size(model: GgmlModel) -> int:
    """The MLPs' width: 4 * n_state in OpenAI's models (whisper.cpp assumes it), but taken
    from the file, as a fine-tune converted from Hugging Face may have another."""
    first = model.tensors.get("encoder.blocks.0.mlp.0.weight")
    return (
        first.shape[0]
        if first is not None and first.shape[0] > 0
        else 4 * model.hparams["n_audio_state"]
    )


def write_checkpoint(model: GgmlModel, target: Path, log: logging.Logger) -> None:
    """Write ``model`` (checked by :func:`check_shape`) as a checkpoint directory ``target``."""
    from safetensors.numpy import save_file  # the hf extra, which conversion needs anyway

    expected = check_shape(model)
    hp = model.hparams
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer_json(model.tokens, hp["n_vocab"])
    (target / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), "utf-8")
    weights = {}
    for name, (shape, hf_name) in expected.items():
        weights[hf_name] = np.ascontiguousarray(model.tensors[name].array().reshape(shape))
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    config, generation = _configs(hp, tokenizer, ffn_size(model))
    (target / "config.json").write_text(json.dumps(config, indent=2), "utf-8")
    (target / "generation_config.json").write_text(json.dumps(generation, indent=2), "utf-8")
    (target / "preprocessor_config.json").write_text(
        json.dumps(_preprocessor(hp["n_mels"]), indent=2), "utf-8"
    )
    log.debug("ggml file %s written as a checkpoint in %s", model.path, target)


def _configs(hp: dict[str, int], tokenizer: dict[str, Any], ffn: int) -> tuple[dict[str, Any], ...]:
    ids = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    multilingual = hp["n_vocab"] > N_VOCAB_ENGLISH
    no_speech = ids.get("<|nospeech|>", ids.get("<|nocaptions|>"))
    specials = [sot, ids["<|translate|>"], ids["<|transcribe|>"], ids["<|startoflm|>"],
                ids["<|startofprev|>"], no_speech]  # fmt: skip
    suppress = sorted({*_non_speech_tokens(tokenizer, multilingual), *specials})
    tokens = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": [220, eot],
    }
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": hp["n_vocab"],
        "num_mel_bins": hp["n_mels"],
        "d_model": hp["n_audio_state"],
        "encoder_layers": hp["n_audio_layer"],
        "encoder_attention_heads": hp["n_audio_head"],
        "decoder_layers": hp["n_text_layer"],
        "decoder_attention_heads": hp["n_text_head"],
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": ffn,
        "max_source_positions": hp["n_audio_ctx"],
        "max_target_positions": hp["n_text_ctx"],
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        **tokens,
    }
    languages = {t: i for t, i in ids.items() if sot < i < ids["<|translate|>"]}
    heads = alignment_heads(hp)
    generation = {
        **tokens,
        **({"alignment_heads": heads} if heads else {}),
        "is_multilingual": multilingual,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "max_length": hp["n_text_ctx"],
        **({"lang_to_id": languages} if multilingual else {}),
    }
    return config, generation


def alignment_heads(hp: dict[str, int]) -> list[list[int]] | None:
    """The alignment heads of the OpenAI model of this shape, from CTranslate2's converter's
    table (large-v1 and v2 have one shape: v2's), else None: CTranslate2's default then, the
    heads of the decoder's last half (large-v3-turbo, distilled and other shapes)."""
    size = SIZES.get((hp["n_text_layer"], hp["n_text_state"]))
    if size is None or hp["n_audio_layer"] != hp["n_text_layer"]:
        return None
    if hp["n_vocab"] == N_VOCAB_ENGLISH:
        name = f"{size}.en" if size != "large-v2" else None
    else:
        name = "large-v3" if hp["n_mels"] == 128 and size == "large-v2" else size
    try:  # a private table; without it (a future CTranslate2), the default heads
        from ctranslate2.converters.transformers import _WHISPER_ALIGNMENT_HEADS as table
    except ImportError:
        return None
    heads = table.get(f"openai/whisper-{name}") if name else None
    return [list(pair) for pair in heads] if heads else None


def _non_speech_tokens(tokenizer: dict[str, Any], multilingual: bool) -> list[int]:
    """Whisper's symbol tokens, suppressed while decoding (faster-whisper's own rule)."""
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    hf = tokenizers.Tokenizer.from_str(json.dumps(tokenizer))
    options = {"task": "transcribe", "language": "en"} if multilingual else {}
    return list(Tokenizer(hf, multilingual=multilingual, **options).non_speech_tokens)


def _preprocessor(n_mels: int) -> dict[str, Any]:
    return {
        "chunk_length": 30,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": n_mels,
        "hop_length": 160,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": False,
        "sampling_rate": 16000,
    }
