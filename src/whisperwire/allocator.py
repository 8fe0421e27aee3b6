"""The C allocator's settings for a long-running server process (glibc only).

glibc gives each thread that allocates under contention an arena of its own, up to eight per
core, and memory a thread frees stays in its arena for that thread to reuse. The server's
threads (the event loop, the decode workers, the solo lane, the VAD, anyio's pool, CTranslate2's)
each keep what they freed, and the resident memory creeps up session after session. Fewer
arenas let freed memory be reused by any thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


def limit_arenas(arenas: int) -> bool:
    """Let glibc's malloc use at most `arenas` arenas from now on; 0 leaves glibc's default.

    Call it before the process starts threads: a thread keeps the arena it was given. The
    MALLOC_ARENA_MAX environment variable, when set, wins. Returns whether the limit was set
    (False elsewhere than glibc)."""
    if arenas <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) failed: glibc's default arenas stay", arenas)
        return False
    return True
