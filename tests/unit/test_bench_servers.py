"""The bench's view of a server process: CPU time and memory of the process and everything it
started (a `serve --ray` runs its Ray cluster under it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil

from whisperwire.bench.servers import cpu_seconds, rss_mb

CHILD = textwrap.dedent(
    """
    import time
    held = b"x" * (200 * 2**20)  # written, so resident
    started = time.process_time()
    while time.process_time() - started < 1.0:  # a second of CPU
        pass
    print("done", flush=True)
    time.sleep(30)
    """
)
PARENT = (
    "import subprocess, sys; "
    f"subprocess.run([sys.executable, '-c', {CHILD!r}])"  # waits, using no CPU of its own
)


def test_a_servers_cpu_and_memory_count_the_processes_it_started() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "done"  # the child has spent its second
        seconds, mib = cpu_seconds(parent.pid), rss_mb(parent.pid)
        assert seconds is not None and seconds >= 1.0
        assert mib is not None and mib >= 200
    finally:
        for process in [*psutil.Process(parent.pid).children(), psutil.Process(parent.pid)]:
            process.kill()
        parent.wait()
    assert cpu_seconds(parent.pid) is None  # gone
