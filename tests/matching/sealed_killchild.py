"""Child of ``test_sealed_kill``: one gallery write or key rotation, killed after step K.

    python -m tests.matching.sealed_killchild STATE_DIR K enrol|remove|rotate

Every durable step counts: a file written (temp + fsync + rename) or shredded by
the gallery or the snapshot store, a key file written or destroyed, a SQLite
transaction.  Right after step K the child SIGKILLs itself, as a power cut
after that step's fsync.  With no step K left it prints ``DONE``.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from agent import keystore
from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.matching import store
from agent.matching.gallery import Gallery
from drivers.camera import build_camera, snapshots
from drivers.compose import compose
from drivers.vision.feature import build_faces
from tests.core.crypto_rig import rig_config
from tests.support.killpoints import kill_after_step

DIM = 16
NEWCOMER = "Newcomer Pelargonia"
REMOVED = "person-1"


def newcomer_rows() -> np.ndarray:
    return np.random.default_rng(99).standard_normal((2, DIM))


_DURABLE = (
    (keystore, "write_atomic"),
    (keystore, "overwrite_and_unlink"),
    (store, "write_atomic"),
    (store, "shred"),
    (snapshots, "write_atomic"),
    (snapshots, "shred"),
)


def main(argv: list[str]) -> int:
    state_dir, kill_at, action = pathlib.Path(argv[0]), int(argv[1]), argv[2]
    layout = StateLayout(state_dir)
    if action == "rotate":
        composition = compose(
            rig_config(state_dir), Mode.CLI, builders=(build_camera, build_faces)
        )
        kill_after_step(kill_at, _DURABLE)
        result = composition.commands["data.rotate_keys"]({})
        assert isinstance(result, dict) and not result["failed"], result
    else:
        gallery = Gallery.open(layout.faces_dir, DIM, keys=DataKeys(layout))
        kill_after_step(kill_at, _DURABLE)
        if action == "enrol":
            gallery.enrol(NEWCOMER, newcomer_rows(), label="Newcomer-Label")
        elif action == "remove":
            gallery.remove(REMOVED)
        else:
            raise SystemExit(f"unknown action {action!r}")
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
