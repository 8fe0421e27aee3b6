"""Conversion itself: a checked checkpoint into a CTranslate2 model directory, by CTranslate2's
Transformers converter, written in a work directory and renamed into place when complete."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import ctranslate2

from whisperwire.checkpoints.errors import CheckpointError, read_json
from whisperwire.checkpoints.inspection import PREPROCESSOR, Checkpoint, check_tokenizer
from whisperwire.checkpoints.tokens import language_tokens, load_tokenizer

ConverterFactory = Callable[..., Any]
"""Called as ``factory(model_dir, copy_files=[...])``; returns an object whose
``convert(output_dir, quantization=...)`` writes a CTranslate2 model, like
``ctranslate2.converters.TransformersConverter`` (the default)."""

MARKER = "whisperwire-conversion.json"
"""Written into a converted model directory last: only a directory holding it is used."""

RECIPE_VERSION = 2
"""Part of the cache key: bump it when the conversion output changes for the same input.
2: weights stored as float16 (quantized at load time), no longer pre-quantized."""

HF_EXTRA_HINT = "pip install 'whisperwire[hf]'"
MIN_TRANSFORMERS = "4.56"  # see check_converter_version

QUANTIZATIONS = frozenset(
    {
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    }
)
# faster-whisper reads these two from the model directory (tokens, mel bins).
COPIED_FILES = ("tokenizer.json", PREPROCESSOR)


def quantization_for(compute_type: str) -> str:
    """The weight type a conversion stores, for a ``--compute-type`` (checked here).

    float16, like the stock faster-whisper models, for every compute type but ``float32`` and
    ``bfloat16``, which keep their own type so that no precision is lost before they compute.
    CTranslate2 then converts or quantizes at load time (``int8`` and the like) exactly as it does
    for a stock model, so a checkpoint and the stock model with the same weights compute the same
    numbers. Quantizing in the converter instead gives other int8 weights (the converter's numpy
    rounding, its int8 convolutions): the same weights then transcribed differently from the stock
    model, by a few WER points either way depending on the CPU's kernels.
    """
    wanted = compute_type.strip().lower()
    if wanted not in QUANTIZATIONS | {"default", "auto"}:
        accepted = ", ".join(sorted(QUANTIZATIONS | {"default", "auto"}))
        raise CheckpointError(f"unknown compute type {compute_type!r} (accepted: {accepted})")
    return wanted if wanted in {"float32", "bfloat16"} else "float16"


def convert(
    checkpoint: Checkpoint,
    target: Path,
    quantization: str,
    key: str,
    factory: ConverterFactory,
    log: logging.Logger,
    source: Path | None = None,
) -> None:
    """Convert ``checkpoint`` into ``target``; ``source`` names what the checkpoint was made
    from (a ggml file) in the log and the marker, when not the checkpoint directory itself."""
    origin = source if source is not None else checkpoint.root
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        staged = work / "checkpoint"
        staged.mkdir()
        for name, source in checkpoint.files.items():
            (staged / name).symlink_to(source.resolve())
        if checkpoint.build_tokenizer_json:
            log.info(
                "checkpoint %s: building tokenizer.json from vocab.json and merges.txt",
                checkpoint.root,
            )
            _build_tokenizer_json(staged)
        if checkpoint.derive_preprocessor:
            log.warning(
                "checkpoint %s has no %s: deriving it from config.json (num_mel_bins=%s)",
                checkpoint.root,
                PREPROCESSOR,
                checkpoint.config.get("num_mel_bins", 80),
            )
            _derive_preprocessor(staged, checkpoint.config)
        check_tokenizer(staged / "tokenizer.json", checkpoint)

        log.info(
            "converting %s to CTranslate2 (%s); this happens once per checkpoint",
            origin,
            quantization,
        )
        started = time.monotonic()
        output = work / "model"
        factory(str(staged), copy_files=list(COPIED_FILES)).convert(
            str(output), quantization=quantization
        )
        seconds = time.monotonic() - started
        _complete_lang_ids(output, staged)
        _sync_files(output)
        marker = {
            "source": str(origin.resolve()),
            "quantization": quantization,
            "ctranslate2": ctranslate2.__version__,
            "recipe": RECIPE_VERSION,
            "key": key,
            "seconds": round(seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with (output / MARKER).open("w", encoding="utf-8") as fh:
            json.dump(marker, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(output, target)
        _sync_files(target.parent, directory_only=True)
        log.info("converted %s in %.1f s into %s", origin, seconds, target)
    except CheckpointError:
        raise
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"converting {origin} failed: {type(exc).__name__}: {first_line}"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def default_converter() -> ConverterFactory:
    check_converter_version(_require_hf().__version__)
    from ctranslate2.converters import TransformersConverter

    return TransformersConverter


def check_converter_version(transformers_version: str) -> None:
    """Refuse a transformers release that CTranslate2's converter cannot drive.

    The converter loads the model with ``from_pretrained(..., dtype=...)``; transformers before
    4.56 passes that keyword on to the model's constructor, and the conversion fails half-way
    (``__init__() got an unexpected keyword argument 'dtype'``).
    """
    from packaging.version import Version  # a dependency of transformers

    if Version(transformers_version) < Version(MIN_TRANSFORMERS):
        raise CheckpointError(
            f"transformers {transformers_version} cannot convert checkpoints with CTranslate2 "
            f"{ctranslate2.__version__}: install transformers>={MIN_TRANSFORMERS} "
            f"({HF_EXTRA_HINT})"
        )


def _require_hf() -> ModuleType:
    """``transformers`` (and ``torch``), or the install hint."""
    try:
        importlib.import_module("torch")
        return importlib.import_module("transformers")
    except ImportError as exc:
        missing = exc.name or "a dependency"
        raise CheckpointError(
            f"converting a Hugging Face checkpoint needs transformers and torch ({missing} is "
            f"not installed): {HF_EXTRA_HINT}"
        ) from exc


def _build_tokenizer_json(staged: Path) -> None:
    """tokenizer.json from vocab.json + merges.txt and the added/special tokens files."""
    transformers = _require_hf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(staged))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(f"cannot build tokenizer.json from the tokenizer files in {staged}")
    backend.save(str(staged / "tokenizer.json"))


def _derive_preprocessor(staged: Path, config: dict[str, Any]) -> None:
    transformers = _require_hf()
    extractor = transformers.WhisperFeatureExtractor(feature_size=config.get("num_mel_bins", 80))
    extractor.to_json_file(str(staged / PREPROCESSOR))


def _complete_lang_ids(output: Path, staged: Path) -> None:
    """Fill CTranslate2's ``lang_ids`` when the converter could not.

    With transformers 5 the converter finds neither ``generation_config.lang_to_id`` nor the
    tokenizer's ``additional_special_tokens`` and writes ``lang_ids: []``; language detection
    then fails. Take them from the checkpoint's ``generation_config.json``, else the tokenizer.
    """
    config_path = output / "config.json"
    if not config_path.is_file():
        return
    config = read_json(config_path)
    if config.get("lang_ids"):
        return
    lang_to_id: Any = None
    if (staged / "generation_config.json").is_file():
        lang_to_id = read_json(staged / "generation_config.json").get("lang_to_id")
    if isinstance(lang_to_id, dict) and lang_to_id:
        lang_ids = sorted(int(i) for i in lang_to_id.values())
    else:
        vocab = load_tokenizer(staged / "tokenizer.json").get_vocab(with_added_tokens=True)
        lang_ids = sorted(language_tokens(vocab).values())
    if lang_ids:
        config["lang_ids"] = lang_ids
        config_path.write_text(json.dumps(config, indent=4), encoding="utf-8")


def _sync_files(directory: Path, *, directory_only: bool = False) -> None:
    """fsync a finished model (so the marker never outlives its files) or a directory entry."""
    paths = [directory] if directory_only else [*directory.iterdir(), directory]
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
