"""The conversion cache, and :func:`prepare_checkpoint`, which finds a conversion there or makes it.

The cache directory holds one finished model directory per key (made from the checkpoint's
content, the recipe and the weight type; it carries the marker file :data:`MARKER`), a lock file
per key (:class:`filelock.FileLock`) so that two servers never convert the same checkpoint at
once, and, only while a conversion runs, a ``<name>.tmp-*`` work directory. Work directories left
by a killed conversion are removed by the next conversion of the same checkpoint.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ctranslate2
from filelock import FileLock, Timeout

from whisperwire.checkpoints.conversion import (
    MARKER,
    RECIPE_VERSION,
    ConverterFactory,
    convert,
    default_converter,
    quantization_for,
)
from whisperwire.checkpoints.errors import CheckpointError, reason
from whisperwire.checkpoints.ggml import read_ggml
from whisperwire.checkpoints.ggml_hf import check_shape, write_checkpoint
from whisperwire.checkpoints.inspection import Checkpoint, inspect_checkpoint

logger = logging.getLogger("whisperwire.checkpoints")

StrPath = str | os.PathLike[str]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/whisperwire/checkpoints``, else ``~/.cache/whisperwire/checkpoints``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "whisperwire" / "checkpoints"


def prepare_checkpoint(
    path: StrPath,
    *,
    cache_dir: StrPath | None = None,
    compute_type: str = "int8",
    base_model: str | None = None,
    log: logging.Logger | None = None,
    converter: ConverterFactory | None = None,
) -> Path:
    """Check a Hugging Face Whisper checkpoint, convert it once, return the CTranslate2 directory.

    The returned directory loads with ``faster_whisper.WhisperModel(str(path))`` and holds the
    checkpoint's ``tokenizer.json`` and ``preprocessor_config.json``. Files the checkpoint lacks
    come from ``base_model``: a directory, or a Hugging Face model name looked up in the local
    Hugging Face cache (and downloaded only when the hub is not offline). Without a preprocessor
    file anywhere, one is derived from ``config.json``'s ``num_mel_bins``. ``converter`` replaces
    the CTranslate2 converter factory (tests). Raises :class:`CheckpointError`.
    """
    log = log or logger
    quantization = quantization_for(compute_type)
    checkpoint = inspect_checkpoint(Path(path).expanduser(), base_model, log)

    started = time.monotonic()
    key = _cache_key(checkpoint, quantization)
    size_mb = sum(file.stat().st_size for file in checkpoint.files.values()) / 1e6
    log.debug(
        "hashed %d checkpoint files (%.0f MB) in %.2f s",
        len(checkpoint.files),
        size_mb,
        time.monotonic() - started,
    )

    cache = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()).absolute()
    target = cache / f"whisper-{quantization}-{key[:24]}"

    def make() -> None:
        factory = converter if converter is not None else default_converter()
        convert(checkpoint, target, quantization, key, factory, log)

    return _convert_once(target, f"checkpoint {checkpoint.root}", make, log)


def _convert_once(target: Path, what: str, make: Callable[[], None], log: logging.Logger) -> Path:
    """`target` from the cache, or made there by `make` under the cache's lock for it (one
    process converts; the others wait and take its result)."""
    if _is_complete(target):
        log.info("%s: using the cached conversion %s", what, target)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the checkpoint cache {target.parent}: {exc}") from exc
    with _exclusive(target.parent / f"{target.name}.lock", log):
        if _is_complete(target):
            log.info("%s: converted meanwhile by another process: %s", what, target)
            return target
        _discard_leftovers(target, log)
        make()
    return target


GGML_RECIPE_VERSION = 1
"""Part of a ggml file's cache key: bump it when the ggml -> checkpoint step changes."""


def prepare_ggml(
    path: StrPath,
    *,
    cache_dir: StrPath | None = None,
    compute_type: str = "int8",
    log: logging.Logger | None = None,
    converter: ConverterFactory | None = None,
) -> Path:
    """Check a whisper.cpp ggml model file, convert it once, return the CTranslate2 directory.

    The file is read (quantized tensors dequantized), written as a Hugging Face checkpoint in a
    work directory of the cache and converted like any checkpoint; the result is cached under a
    key made from the file's content. Raises :class:`CheckpointError`.
    """
    log = log or logger
    quantization = quantization_for(compute_type)
    source = Path(path).expanduser()
    model = read_ggml(source)  # the header, vocabulary and tensor table; fails fast
    check_shape(model)
    started = time.monotonic()
    digest = hashlib.sha256()
    recipe = {"recipe": RECIPE_VERSION, "ggml": GGML_RECIPE_VERSION,
              "ctranslate2": ctranslate2.__version__, "q": quantization}  # fmt: skip
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    digest.update(_file_digest(source).encode())
    key = digest.hexdigest()
    log.debug("hashed %s in %.2f s", source, time.monotonic() - started)

    cache = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()).absolute()
    target = cache / f"whisper-ggml-{quantization}-{key[:24]}"

    def make() -> None:
        factory = converter if converter is not None else default_converter()
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=cache))
        try:
            started = time.monotonic()
            log.info(
                "converting ggml file %s (%s) to a Hugging Face checkpoint",
                source,
                "/".join(sorted(model.types())),
            )
            write_checkpoint(model, work / "checkpoint", log)
            log.info("read and dequantized %s in %.1f s", source, time.monotonic() - started)
            checkpoint = inspect_checkpoint(work / "checkpoint", None, log)
            convert(checkpoint, target, quantization, key, factory, log, source=source)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return _convert_once(target, f"ggml file {source}", make, log)


def _cache_key(checkpoint: Checkpoint, quantization: str) -> str:
    digest = hashlib.sha256()
    recipe = {"recipe": RECIPE_VERSION, "ctranslate2": ctranslate2.__version__, "q": quantization}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for name in sorted(checkpoint.files):
        digest.update(f"\0{name}\0{_file_digest(checkpoint.files[name])}".encode())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {reason(exc)}") from exc
    return digest.hexdigest()


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / MARKER).is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path, log: logging.Logger) -> Iterator[None]:
    """Hold the lock of one cache key, waiting for another process (or thread) that holds it."""
    lock = FileLock(lock_path)
    try:
        try:
            lock.acquire(blocking=False)
        except Timeout:
            log.info(
                "another process is converting this checkpoint; waiting for it (%s)", lock_path
            )
            lock.acquire()
    except OSError as exc:
        raise CheckpointError(f"cannot lock {lock_path}: {reason(exc)}") from exc
    try:
        yield
    finally:
        lock.release()


def _discard_leftovers(target: Path, log: logging.Logger) -> None:
    """Under the lock: remove what killed conversions of this key left behind."""
    leftovers = sorted(target.parent.glob(f"{glob.escape(target.name)}.tmp-*"))
    if target.exists():  # a directory without the marker was never finished
        leftovers.append(target)
    for leftover in leftovers:
        log.warning("removing %s, left by an interrupted conversion", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
