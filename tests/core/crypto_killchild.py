"""Child of ``test_crypto_erase_kill``: one withdrawal, erasure or key rotation, killed at step K.

    python -m tests.core.crypto_killchild STATE_DIR K withdraw|erase|rotate

Every durable step of the operation counts: a key file written or destroyed
(``agent.keystore``), a small file replaced, a SQLite transaction committed.
Right after step K the child SIGKILLs itself: nothing is flushed or closed,
exactly as a power cut after that step's fsync.  With no step K left the
operation ends and the child prints ``DONE``.
"""

from __future__ import annotations

import pathlib
import sys

from agent import keystore
from agent.feature import Mode
from agent.purposes import Purpose
from drivers.compose import compose
from tests.core.crypto_rig import rig_config
from tests.support.killpoints import kill_after_step


def main(argv: list[str]) -> int:
    state_dir, kill_at, action = pathlib.Path(argv[0]), int(argv[1]), argv[2]
    composition = compose(rig_config(state_dir), Mode.DAEMON, builders=())
    kill_after_step(kill_at, [(keystore, "write_atomic"), (keystore, "overwrite_and_unlink")])
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
