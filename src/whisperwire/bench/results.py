"""Reading a results dict (results.json), which may lack any part: a scenario that was not
run or failed, a system without a figure."""

from __future__ import annotations

from typing import Any


def get(data: Any, *path: Any) -> Any:
    """The value at `path` (dict keys and list indexes), or None where it is missing."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def rows(x: Any) -> list[dict[str, Any]]:
    """A list of rows (the capacity scenario's), or [] for anything else (an error)."""
    return x if isinstance(x, list) else []
