"""What the results say about the machine: CPU, memory, load, package versions, commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

PACKAGES = ("faster-whisper", "ctranslate2", "onnxruntime", "whisperwire")


def cpu_model() -> str | None:
    """The CPU's model name. psutil does not report it: on Linux it is read from
    /proc/cpuinfo; elsewhere, the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages."""
    try:
        return [round(x, 2) for x in psutil.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    """The checkout's short commit, with "-dirty" when tracked files changed."""
    repo = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }
    if (cpu := cpu_model()) is not None:
        info["cpu"] = cpu
    info["memory_gb"] = round(psutil.virtual_memory().total / 1024**3, 1)
    for package in PACKAGES:
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    info["git_commit"] = git_commit()
    return info
