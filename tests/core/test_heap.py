"""drivers/heap.py: the start-up library pages really leave the process's memory.

A fresh interpreter imports OpenCV and numpy (about 25 MiB of their shared
objects read in), then calls :func:`release_startup_pages`; the library pages
only it maps (``Private_Clean`` in ``/proc/self/smaps``) must nearly all go, and
its ``RssFile`` fall by as much, and OpenCV must still work afterwards (the
pages it needs are read back).  ``make bench`` reports the
agent's idle RSS and its anonymous part.
"""

from __future__ import annotations

import json
import subprocess
import sys

from drivers.heap import _clean_library_ranges

CHILD = r"""
import json
import cv2, numpy as np
from drivers.heap import _clean_library_ranges, release_startup_pages

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

def library_pages():
    # (Private_Clean, Shared_Clean) KiB over the mappings release_startup_pages advises.
    chosen = {start for start, _ in _clean_library_ranges(open("/proc/self/maps").read())}
    private = shared = 0
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            inside = int(head.split("-")[0], 16) in chosen
        elif inside and head == "Private_Clean:":
            private += int(line.split()[1])
        elif inside and head == "Shared_Clean:":
            shared += int(line.split()[1])
    return private, shared

before, (private_before, shared_before) = kib("RssFile"), library_pages()
advised = release_startup_pages()
after, (private_after, shared_after) = kib("RssFile"), library_pages()
frame = np.full((48, 64, 3), 200, np.uint8)
grey = cv2.cvtColor(cv2.resize(frame, (16, 12), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
print(json.dumps({"before": before, "after": after, "advised": advised, "grey": int(grey[0, 0]),
                  "private_before": private_before, "private_after": private_after,
                  "shared_before": shared_before, "shared_after": shared_after}))
"""


def test_library_pages_touched_at_import_are_released_and_read_back() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True
    )
    measured = json.loads(result.stdout)
    assert measured["advised"] > 10, measured
    # The kernel pages out only what no other process maps: how much of the
    # libraries' pages that is depends on what else runs (this machine's other
    # agents, the test runner; CI once had 5 MiB more shared than usual).  So the
    # claim is on the pages this process alone holds: they go, nearly all of them.
    assert measured["private_before"] > 4 * 1024, measured
    # (A few MiB come back at once: the measuring itself runs libpython.)
    assert measured["private_after"] < measured["private_before"] / 4, measured
    assert measured["after"] < measured["before"] - measured["private_before"] / 2, measured
    assert measured["grey"] == 200  # OpenCV still runs from the pages read back


def test_only_read_only_shared_object_mappings_are_chosen() -> None:
    maps = "\n".join(
        [
            "7f0000000000-7f0000004000 r--p 00000000 08:01 1 /usr/lib/libc.so.6",
            "7f0000004000-7f0000010000 r-xp 00004000 08:01 1 /usr/lib/libc.so.6",
            "7f0000010000-7f0000011000 rw-p 00010000 08:01 1 /usr/lib/libc.so.6",
            "7f0000020000-7f0000021000 r--p 00000000 08:01 2 /var/lib/edge-agent/agent.sqlite",
            "7f0000030000-7f0000031000 rw-p 00000000 00:00 0 [heap]",
            "7f0000040000-7f0000042000 r-xp 00000000 00:00 0 [vdso]",
            "7f0000050000-7f0000051000 r--p 00000000 00:00 0",
        ]
    )
    assert _clean_library_ranges(maps) == [(0x7F0000000000, 0x4000), (0x7F0000004000, 0xC000)]
