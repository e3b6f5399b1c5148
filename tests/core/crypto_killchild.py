"""Child of ``test_crypto_erase_kill``: one withdrawal, erasure or key rotation, killed at step K.

    python -m tests.core.crypto_killchild STATE_DIR K withdraw|erase|rotate

Every durable step of the operation counts: a key file written or destroyed
(``agent.keystore``), a small file replaced, a SQLite transaction committed.
Right after step K the child SIGKILLs itself: nothing is flushed or closed,
exactly as a power cut after that step's fsync.  With no step K left the
operation ends and the child prints ``DONE``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from agent import keystore
from agent.database import Database
from agent.feature import Mode
from agent.purposes import Purpose
from drivers.compose import compose
from tests.core.crypto_rig import rig_config

_steps = 0


def _step(kill_at: int) -> None:
    global _steps
    _steps += 1
    if _steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def _counting(function: Callable[..., Any], kill_at: int) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        _step(kill_at)
        return result

    return counted


def _install(kill_at: int) -> None:
    keystore.write_atomic = _counting(keystore.write_atomic, kill_at)  # type: ignore[assignment]
    keystore.overwrite_and_unlink = _counting(  # type: ignore[assignment]
        keystore.overwrite_and_unlink, kill_at
    )
    original = Database.transaction

    @contextlib.contextmanager
    def transaction(self: Database) -> Iterator[Any]:
        with original(self) as conn:
            yield conn
        _step(kill_at)

    Database.transaction = transaction  # type: ignore[method-assign,assignment]


def main(argv: list[str]) -> int:
    state_dir, kill_at, action = pathlib.Path(argv[0]), int(argv[1]), argv[2]
    composition = compose(rig_config(state_dir), Mode.DAEMON, builders=())
    _install(kill_at)
    now = composition.clock.now()
    if action == "withdraw":
        composition.ledger.withdraw(Purpose.CLOUD_EVENTS, now, source="test")
    elif action == "erase":
        composition.commands["data.erase"]({})
    elif action == "rotate":
        composition.commands["data.rotate_keys"]({})
    else:
        raise SystemExit(f"unknown action {action!r}")
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
