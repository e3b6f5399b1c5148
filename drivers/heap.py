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


# <asm-generic/mman-common.h>: reclaim these pages now (Linux 5.4 and later).
MADV_PAGEOUT = 21


def _clean_library_ranges(maps: str) -> list[tuple[int, int]]:
    """Address ranges of read-only, file-backed mappings of shared objects in ``maps``."""
    ranges = []
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "w" in parts[1] or ".so" not in parts[5]:
            continue  # writable (relocated or data) pages are anonymous once touched
        start, end = (int(x, 16) for x in parts[0].split("-"))
        ranges.append((start, end - start))
    return ranges


def release_startup_pages() -> int:
    """Ask the kernel to reclaim the read-only library pages start-up touched.

    Importing OpenCV, numpy and cryptography reads about 50 MiB of their shared
    objects (binding tables, initialisers), most of which the running loop never
    touches again (6 MiB of OpenCV's come back in the first seconds); they are
    clean file pages, so the kernel may drop them and read back
    any the loop does need (Android pages out cached apps the same way).  Returns
    the number of ranges advised; 0 where ``madvise`` or ``MADV_PAGEOUT`` is missing.
    """
    madvise = getattr(_libc(), "madvise", None)
    if madvise is None:
        return 0
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            ranges = _clean_library_ranges(maps.read())
    except OSError:
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    for start, length in ranges:
        if madvise(start, length, MADV_PAGEOUT) == 0:
            advised += 1
    return advised
