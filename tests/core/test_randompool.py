"""The event path's random pool never hands a forked child its parent's bytes (issue 12)."""

from __future__ import annotations

import os

from agent.randompool import POOL


def test_a_forked_child_draws_fresh_bytes_not_the_parents_next_ones() -> None:
    POOL.take(16)  # the pool now holds a page the parent is part-way through
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it would hand out next, then leave at once
        try:
            os.write(write, POOL.take(16))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    parent = POOL.take(16)
    assert len(child) == 16 and child != parent
