"""What a directory holds: checks of a Hugging Face Whisper checkpoint before any heavy work.

:func:`inspect_checkpoint` reads ``config.json``, checks the weights (a truncated file is caught
from its header), finds the tokenizer and preprocessor files (in the checkpoint, else in a base
model) and gathers every file a conversion reads into a :class:`Checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperwire.checkpoints.base_model import BaseModel
from whisperwire.checkpoints.errors import CheckpointError, read_json, reason
from whisperwire.checkpoints.tokens import load_tokenizer

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "normalizer.json",
)
PREPROCESSOR = "preprocessor_config.json"
WEIGHT_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


@dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint: its ``config.json`` and the files a conversion stages."""

    root: Path
    config: dict[str, Any]
    files: dict[str, Path]  # file name in the staged checkpoint -> source file
    build_tokenizer_json: bool  # only vocab.json + merges.txt: build tokenizer.json
    derive_preprocessor: bool  # no preprocessor_config.json anywhere: derive it from config.json


def inspect_checkpoint(root: Path, base_model: str | None, log: logging.Logger) -> Checkpoint:
    """Cheap checks before any heavy work; gathers the files a conversion reads."""
    try:
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise CheckpointError(f"checkpoint {root} {what}")
        names = {entry.name for entry in os.scandir(root) if entry.is_file()}
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint directory {root}: {reason(exc)}") from exc

    if "config.json" not in names:
        raise CheckpointError(f"{root} has no config.json: not a Hugging Face checkpoint")
    config = read_json(root / "config.json")
    model_type = config.get("model_type")
    if model_type is None:
        raise CheckpointError(
            f"{root}/config.json has no model_type: not a Hugging Face checkpoint"
        )
    if model_type != "whisper":
        raise CheckpointError(
            f"{root} holds a {model_type!r} model (config.json model_type), not a Whisper model"
        )

    files = {"config.json": root / "config.json"}
    files.update(_weight_files(root, names))
    if "generation_config.json" in names:
        files["generation_config.json"] = root / "generation_config.json"

    base = BaseModel(base_model, log) if base_model else None
    tokenizer = _tokenizer_group({n: root / n for n in TOKENIZER_FILES if n in names})
    if tokenizer is None and base is not None:
        tokenizer = _tokenizer_group(base.files(TOKENIZER_FILES))
        if tokenizer is not None:
            log.info("checkpoint %s: taking the tokenizer from %s", root, base_model)
    if tokenizer is None:
        wanted = "tokenizer.json (or vocab.json + merges.txt)"
        if base is None:
            raise CheckpointError(
                f"{root} lacks {wanted}; pass a base model (a directory or a Hugging Face name "
                "such as openai/whisper-small) to take the tokenizer from"
            )
        raise CheckpointError(f"{root} lacks {wanted} and base model {base.describe()} has none")
    files.update(tokenizer)

    preprocessor = root / PREPROCESSOR if PREPROCESSOR in names else None
    if preprocessor is None and base is not None:
        preprocessor = base.files((PREPROCESSOR,)).get(PREPROCESSOR)
    if preprocessor is not None:
        _check_preprocessor(preprocessor, config)
        files[PREPROCESSOR] = preprocessor

    return Checkpoint(
        root=root,
        config=config,
        files=files,
        build_tokenizer_json="tokenizer.json" not in files,
        derive_preprocessor=preprocessor is None,
    )


def _weight_files(root: Path, names: set[str]) -> dict[str, Path]:
    for single, index in WEIGHT_LAYOUTS:
        if single in names:
            _check_weights(root / single)
            return {single: root / single}
        if index in names:
            weight_map = read_json(root / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{root / index} has no weight_map")
            files = {index: root / index}
            for shard in sorted(set(map(str, weight_map.values()))):
                if Path(shard).name != shard:
                    raise CheckpointError(f"{root / index} names a shard outside the checkpoint")
                if shard not in names:
                    raise CheckpointError(f"{root / shard} (listed in {index}) is missing")
                _check_weights(root / shard)
                files[shard] = root / shard
            return files
    raise CheckpointError(
        f"{root} has no weights: expected model.safetensors, pytorch_model.bin or a sharded "
        "index (model.safetensors.index.json, pytorch_model.bin.index.json)"
    )


def _check_weights(path: Path) -> None:
    try:
        if path.suffix == ".safetensors":
            _check_safetensors(path)
        else:
            _check_torch_file(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {reason(exc)}") from exc


def _check_safetensors(path: Path) -> None:
    """Header and size: a truncated file is caught without loading any tensor."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < header_len <= size - 8:
            raise CheckpointError(f"{path} is damaged or truncated: no valid safetensors header")
        try:
            header = json.loads(fh.read(header_len))
            data_end = max(
                (int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                default=0,
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path} has a damaged safetensors header") from exc
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(f"{path} is truncated: {size} bytes, its header describes {expected}")


def _check_torch_file(path: Path) -> None:
    """``torch.save`` writes a zip archive (or, before torch 1.6, a pickle)."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"PK":
        try:
            with zipfile.ZipFile(path):
                pass
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{path} is truncated or damaged ({exc})") from exc
    elif not magic.startswith(b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint")


def _check_preprocessor(path: Path, config: dict[str, Any]) -> None:
    feature_size = read_json(path).get("feature_size")
    mel_bins = config.get("num_mel_bins", 80)
    if feature_size != mel_bins:
        raise CheckpointError(
            f"{path} has feature_size {feature_size} but the model's config.json num_mel_bins "
            f"is {mel_bins}"
        )


def _tokenizer_group(found: dict[str, Path]) -> dict[str, Path] | None:
    """The tokenizer files of one source, if they make a tokenizer."""
    if "tokenizer.json" in found or {"vocab.json", "merges.txt"} <= found.keys():
        return found
    return None


def check_tokenizer(path: Path, checkpoint: Checkpoint) -> None:
    """The ids must line up with the model, or CTranslate2's vocabulary would be shifted."""
    try:
        vocab = load_tokenizer(path).get_vocab(with_added_tokens=True)
    except Exception as exc:
        raise CheckpointError(f"the tokenizer of {checkpoint.root} does not load: {exc}") from exc
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise CheckpointError(f"the tokenizer of {checkpoint.root} has gaps in its token ids")
    vocab_size = checkpoint.config.get("vocab_size")
    if isinstance(vocab_size, int) and len(ids) > vocab_size:
        raise CheckpointError(
            f"the tokenizer of {checkpoint.root} has {len(ids)} tokens, more than the model's "
            f"vocab_size {vocab_size}"
        )
    sot = vocab.get("<|startoftranscript|>")
    start = checkpoint.config.get("decoder_start_token_id")
    if sot is None or (isinstance(start, int) and sot != start):
        raise CheckpointError(
            f"the tokenizer of {checkpoint.root} does not match the model: <|startoftranscript|> "
            f"is token {sot} but config.json decoder_start_token_id is {start}"
        )
