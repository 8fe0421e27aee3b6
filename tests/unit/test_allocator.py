"""`--malloc-arenas`: the server's threads share a bounded number of glibc malloc arenas."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Eight threads allocate at once, then glibc's own report counts the arenas ("heaps").
PROBE = """
import ctypes, ctypes.util, sys, tempfile, threading
from whisperwire.allocator import limit_arenas
print(limit_arenas(int(sys.argv[1])))
start, kept = threading.Barrier(8), []
def work():
    start.wait()
    kept.append([bytes(600) for _ in range(1000)])
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    out = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, out)
    libc.fclose(out)
    print(open(report.name).read().count("<heap nr="))
"""


def arenas_used(limit: int, **env: str) -> tuple[bool, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(limit)],
        capture_output=True,
        text=True,
        check=True,
        env=environ,
        timeout=60,
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_threads_share_the_arenas_allowed() -> None:
    assert arenas_used(2) == (True, 2)
    assert arenas_used(1) == (True, 1)


def test_without_a_limit_each_thread_takes_an_arena_of_its_own() -> None:
    limited, arenas = arenas_used(0)
    assert not limited
    assert arenas > 2  # the main thread's and one per thread, up to 8 per core


def test_the_environment_variable_wins() -> None:
    assert arenas_used(4, MALLOC_ARENA_MAX="1") == (False, 1)
