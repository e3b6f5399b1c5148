"""SIGKILL a child process right after its K-th durable step.

A durable step is a call of one of the named functions (file writes, shreds,
key destruction) or a committed SQLite transaction.  Kill tests run the child
with K = 1, 2, ... until it finishes, and check what a restart finds after each.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from agent.database import Database


def kill_after_step(kill_at: int, functions: Iterable[tuple[ModuleType, str]]) -> None:
    """Count every call of ``module.name`` in ``functions`` and every commit; die at ``kill_at``."""
    steps = [0]

    def step() -> None:
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def counting(function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            step()
            return result

        return counted

    for module, name in functions:
        setattr(module, name, counting(getattr(module, name)))
    original = Database.transaction

    @contextlib.contextmanager
    def transaction(self: Database) -> Iterator[Any]:
        with original(self) as conn:
            yield conn
        step()

    Database.transaction = transaction  # type: ignore[method-assign,assignment]
