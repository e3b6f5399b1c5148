"""Child of ``test_crypto_erase_kill``: one withdrawal, erasure or key rotation, killed at step K.

    python -m tests.core.crypto_killchild STATE_DIR K withdraw|erase|rotate
    python -m tests.core.crypto_killchild STATE_DIR K cli-withdraw PURPOSE CONFIG
    python -m tests.core.crypto_killchild STATE_DIR K wifi-rotation-service|wifi-rotate-keys CONFIG
    python -m tests.core.crypto_killchild STATE_DIR K cli-erase-account CONFIG

``cli-withdraw`` runs ``edge-agent consent withdraw PURPOSE`` itself (the CLI's
``main``: ``compose(Mode.CLI)`` with every feature, ``ConsentLedger.set`` and
the withdrawal hooks of the holdings), counting also the stores' own durable
steps: a file shredded, overwritten or unlinked, a watch-list commit or
checkpoint, a database checkpoint.

The ``wifi-*`` and ``cli-erase-account`` actions (``test_crypto_erase_kill_wifi``)
run on a state seeded by :mod:`tests.core.crypto_rig_wifi`, with the saved Wi-Fi
network's own steps counted too (``wifi.json`` written or shredded):
``wifi-rotation-service`` starts the daemon's ``key-rotation`` service, which
carries out the pending rotation requests; ``wifi-rotate-keys`` serves
``data.rotate_keys`` (every domain); ``cli-erase-account`` runs
``edge-agent data erase --account --yes`` (the CLI's ``main``).

Every durable step of the operation counts: a key file written or destroyed
(``agent.keystore``), a small file replaced, a SQLite transaction committed.
Right after step K the child SIGKILLs itself: nothing is flushed or closed,
exactly as a power cut after that step's fsync.  With no step K left the
operation ends and the child prints ``DONE``.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

from agent import keystore
from agent.database import Database
from agent.feature import Mode
from agent.purposes import Purpose
from drivers.compose import compose
from tests.core.crypto_rig import rig_config
from tests.support.killpoints import kill_after_step


def _mark_database_checkpoints(marks: types.SimpleNamespace) -> None:
    """Call ``marks.checkpointed()`` (a counted step) after every SQLite checkpoint."""
    db_checkpoint = Database.checkpoint

    def database_checkpoint(self: Database, *args: Any, **kwargs: Any) -> Any:
        result = db_checkpoint(self, *args, **kwargs)
        marks.checkpointed()
        return result

    Database.checkpoint = database_checkpoint  # type: ignore[method-assign]


def _cli_withdraw(state_dir: pathlib.Path, kill_at: int, purpose: str, config: str) -> None:
    # lazy: only this action needs the stores
    from agent.matching.plates_store import PlateStore
    from drivers import cli
    from drivers.logs import files as log_files
    from drivers.logs import store as log_store

    # Steps the counter cannot wrap where they happen: each calls a counted marker.
    marks = types.SimpleNamespace(committed=lambda: None, checkpointed=lambda: None)
    plates_transaction = PlateStore._transaction
    plates_checkpoint = PlateStore._checkpoint

    @contextlib.contextmanager
    def transaction(self: PlateStore, conn: Any) -> Iterator[Any]:
        with plates_transaction(self, conn) as inside:
            yield inside
        marks.committed()

    def checkpoint(self: PlateStore, conn: Any) -> None:
        plates_checkpoint(self, conn)
        marks.checkpointed()

    PlateStore._transaction = transaction  # type: ignore[method-assign,assignment]
    PlateStore._checkpoint = checkpoint  # type: ignore[method-assign]
    _mark_database_checkpoints(marks)
    kill_after_step(kill_at, [
        (keystore, "write_atomic"),
        (keystore, "overwrite_and_unlink"),
        (log_files, "shred"),
        (log_store, "overwrite_and_truncate"),
        (log_store, "write_atomic"),
        (pathlib.Path, "unlink"),  # type: ignore[list-item]
        (marks, "committed"),  # type: ignore[list-item]
        (marks, "checkpointed"),  # type: ignore[list-item]
    ])
    code = cli.main([
        "consent", "withdraw", purpose, "--config", config, "--state-dir", str(state_dir),
        "--json",
    ])
    if code != 0:
        raise SystemExit(f"consent withdraw {purpose} exited {code}")


def _count_wifi_steps(kill_at: int) -> None:
    """Every durable step an erasure or rotation of the saved network and the events takes."""
    from drivers.logs import files as log_files
    from drivers.logs import store as log_store
    from drivers.provisioning import store as provisioning_store

    marks = types.SimpleNamespace(checkpointed=lambda: None)
    _mark_database_checkpoints(marks)
    kill_after_step(kill_at, [
        (keystore, "write_atomic"),
        (keystore, "overwrite_and_unlink"),
        (provisioning_store, "write_atomic"),
        (log_files, "shred"),
        (log_files, "write_atomic"),
        (log_store, "overwrite_and_truncate"),
        (log_store, "write_atomic"),
        (pathlib.Path, "unlink"),  # type: ignore[list-item]
        (marks, "checkpointed"),  # type: ignore[list-item]
    ])


def _wifi(state_dir: pathlib.Path, kill_at: int, action: str, config: str) -> None:
    # lazy: only these actions need the rig's features and the CLI
    from drivers import cli
    from drivers.rights.feature import KeyRotationService
    from tests.core.crypto_rig_stores import load
    from tests.core.crypto_rig_wifi import BUILDERS

    if action == "cli-erase-account":
        _count_wifi_steps(kill_at)
        code = cli.main([
            "data", "erase", "--account", "--yes", "--config", config,
            "--state-dir", str(state_dir),
        ])
        if code != 0:
            raise SystemExit(f"data erase --account exited {code}")
        return
    # As the daemon: its start has run (recovery, nothing to recover) before the steps count.
    composition = compose(load(pathlib.Path(config), state_dir), Mode.DAEMON, builders=BUILDERS)
    _count_wifi_steps(kill_at)
    if action == "wifi-rotation-service":
        (service,) = [s for s in composition.services if isinstance(s, KeyRotationService)]
        service.start()  # carries out the pending requests, as at every daemon start
        if keystore.DataKeys(composition.layout).rotation_requests():
            raise SystemExit("the rotation requests were not carried out")
    elif action == "wifi-rotate-keys":
        result = composition.commands["data.rotate_keys"]({})
        if not isinstance(result, Mapping) or result.get("failed"):
            raise SystemExit(f"data.rotate_keys: {result!r}")
    else:
        raise SystemExit(f"unknown action {action!r}")
    composition.close()


def main(argv: list[str]) -> int:
    state_dir, kill_at, action = pathlib.Path(argv[0]), int(argv[1]), argv[2]
    if action == "cli-withdraw":
        _cli_withdraw(state_dir, kill_at, argv[3], argv[4])
        print("DONE", flush=True)
        return 0
    if action in ("wifi-rotation-service", "wifi-rotate-keys", "cli-erase-account"):
        _wifi(state_dir, kill_at, action, argv[3])
        print("DONE", flush=True)
        return 0
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
