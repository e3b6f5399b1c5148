"""The C heap of the long-running agent: keep freed camera frames from staying resident.

A 640x480 BGR frame is 900 KiB, above glibc's initial mmap threshold (128 KiB),
so the first frames are mapped and unmapped on their own.  But glibc raises that
threshold to the size of every mapped block it frees, so after the first frame
all later frames and their intermediate copies come from the capture thread's
arena, whose freed chunks stay resident: about 6 MiB of an idle agent's RSS
(`make bench`, tests/bench/bench_footprint.py).  Fixing the threshold keeps
every large block a mapping of its own, returned to the kernel when freed, at
the price of a few page faults per frame.

Only glibc has ``mallopt``/``malloc_trim``; elsewhere (musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

# <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial value, now kept


@functools.cache
def _libc() -> Any:
    # The symbols the process already has (libc's among them): ctypes.util.find_library
    # would run ldconfig in a subprocess at every start just to name the same library.
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def keep_large_blocks_mapped(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (see the module doc); False where that is not glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def trim() -> None:
    """Hand freed heap pages back to the kernel (after dropping a model); glibc only."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
