"""The one error a checkpoint gives, and the file reads every step shares that raise it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class CheckpointError(Exception):
    """A checkpoint can't be used; the message is one human-readable line naming the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a :class:`CheckpointError` saying what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {reason(exc)}") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def reason(exc: OSError) -> str:
    """The short reason of an OS error ("Permission denied"), without the path."""
    return exc.strerror or str(exc)
