"""The systems under test: server processes the harness starts (or a URL it is given), and
what psutil says about them and the machine (RSS, CPU time)."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil


def _tree_total(pid: int, measure: Callable[[psutil.Process], float]) -> float | None:
    """`measure` summed over a process and its descendants (a server on Ray Serve runs the
    cluster's processes under it); None if the process itself is gone."""
    try:
        process = psutil.Process(pid)
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for member in tree:
        with contextlib.suppress(psutil.Error):  # a child that just ended
            total += measure(member)
    return total


def rss_mb(pid: int) -> float | None:
    """The resident set size of a process and its descendants, MiB (None if it is gone)."""
    total = _tree_total(pid, lambda process: process.memory_info().rss)
    return None if total is None else total / 2**20


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its descendants (all their threads), seconds
    (None if it is gone)."""
    return _tree_total(pid, lambda process: sum(process.cpu_times()[:2]))


def machine_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine, all cores, seconds: total counts user,
    nice, system, idle, iowait, irq, softirq and steal (guest time is inside user and nice);
    busy is all but idle and iowait."""
    times = psutil.cpu_times()
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    total = sum(getattr(times, name, 0.0) for name in fields)
    return total - times.idle - getattr(times, "iowait", 0.0), total


class CpuWatch:
    """CPU use of the machine, the server and this process over a stretch of time."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self._machine = machine_cpu_times()
        self._server = cpu_seconds(server_pid) if server_pid else None
        self._own = sum(os.times()[:2])
        self._wall = time.monotonic()

    def result(self) -> dict[str, float | None]:
        wall = time.monotonic() - self._wall
        cores = os.cpu_count() or 1
        machine, now = None, machine_cpu_times()
        if now[1] > self._machine[1]:
            machine = (now[0] - self._machine[0]) / (now[1] - self._machine[1])
        server = None
        if self._server is not None and self.pid and (s := cpu_seconds(self.pid)) is not None:
            server = (s - self._server) / wall / cores if wall > 0 else None
        client = (sum(os.times()[:2]) - self._own) / wall / cores if wall > 0 else None
        others = None
        if machine is not None and server is not None and client is not None:
            others = max(0.0, machine - server - client)

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "machine_busy": r(machine),
            "server": r(server),
            "bench_client": r(client),
            "others": r(others),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, alive: subprocess.Popen[bytes]) -> None:
    """Until the server listens and, if it answers GET /health, no longer with 404 or 503:
    behind Ray's proxy the port opens before the replicas are up (a server without /health,
    as the baseline, is ready once it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            raise RuntimeError(f"server exited with status {alive.returncode}")
        try:
            status = httpx.get(f"http://{host}:{port}/health", timeout=2).status_code
        except httpx.ConnectError:  # not listening yet
            status = None
        except httpx.HTTPError:  # listening, not HTTP
            return
        if status is not None and status not in (404, 503):
            return
        time.sleep(0.2)
    raise RuntimeError(f"server was not ready on {host}:{port} within {timeout:.0f} s")


@dataclass
class System:
    """One system under test: a name, its server command (None: an external --url)."""

    name: str
    command: list[str] | None
    url: str | None = None
    log_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_path: Path | None = None
    _port: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def launch(self) -> None:
        """Start the server process (returns at once; `wait_ready` waits for its port)."""
        if self.command is None:
            return
        self._port = free_port()
        command = [*self.command, "--host", "127.0.0.1", "--port", str(self._port)]
        assert self.log_dir is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.log_path = self.log_dir / f"server-{self.name}-{self.starts}.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        if self.process is None:
            return
        try:
            wait_for_port("127.0.0.1", self._port, timeout, self.process)
        except RuntimeError as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""
            raise RuntimeError(f"{self.name}: {exc}\n{tail}") from None
        self.url = f"ws://127.0.0.1:{self._port}/"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid) if self.pid is not None else None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid is not None else None

    def describe(self) -> dict[str, object]:
        return {
            "command": shlex.join(self.command) if self.command else None,
            "url": self.url if self.command is None else "started by the harness",
        }


def start_all(systems: list[System]) -> None:
    """Start every server at once (model loads overlap), then wait for each to listen."""
    for system in systems:
        system.launch()
    for system in systems:
        system.wait_ready()


def whisperwire_system(
    server_args: list[str],
    log_dir: Path,
    command: list[str] | None = None,
    name: str = "whisperwire",
) -> System:
    base = command or [sys.executable, "-m", "whisperwire", "serve"]
    return System(name, [*base, *server_args], log_dir=log_dir)


def baseline_system(beam_size: int, threads: int, log_dir: Path) -> System:
    command = [
        sys.executable, "-m", "whisperwire.bench.baseline",
        "--beam-size", str(beam_size), "--threads", str(threads),
    ]  # fmt: skip
    return System("baseline", command, log_dir=log_dir)


def external_system(name: str, url: str) -> System:
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "wss"):
        raise ValueError(f"--url must be ws:// or wss:// (got {url!r})")
    return System(name, None, url=url)


@dataclass
class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread."""

    system: System
    interval: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def __enter__(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        value = self.system.rss_mb()
        if value is not None:
            self.samples.append((round(time.monotonic() - self._t0, 1), round(value, 1)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
