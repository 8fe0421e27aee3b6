"""The base model a checkpoint's missing tokenizer or preprocessor files come from."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from whisperwire.checkpoints.errors import CheckpointError


class BaseModel:
    """Where missing tokenizer/preprocessor files come from: a directory or a hub name."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.directory = Path(name).expanduser()
        self.offline = _hub_offline()
        if not self.directory.is_dir() and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
            raise CheckpointError(
                f"base model {name!r} is neither a directory nor a Hugging Face model name"
            )

    def describe(self) -> str:
        if self.directory.is_dir():
            return str(self.directory)
        where = "the local Hugging Face cache (offline)" if self.offline else "the Hugging Face hub"
        return f"{self.name!r} in {where}"

    def files(self, names: tuple[str, ...]) -> dict[str, Path]:
        if self.directory.is_dir():
            return {n: self.directory / n for n in names if (self.directory / n).is_file()}
        return {n: p for n in names if (p := self._hub_file(n)) is not None}

    def _hub_file(self, filename: str) -> Path | None:
        import huggingface_hub  # a faster-whisper dependency

        cached = huggingface_hub.try_to_load_from_cache(self.name, filename)
        if isinstance(cached, str):
            return Path(cached)
        if self.offline:
            return None
        try:
            return Path(huggingface_hub.hf_hub_download(self.name, filename))
        except Exception as exc:  # absent file, unknown repo, no network alike
            self.log.debug("base model %s: no %s (%s)", self.name, filename, exc)
            return None


def _hub_offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)
