"""Child process of ``test_killpoints``: run one installer step, park at a named checkpoint.

    python -m tests.upgrade.killchild CONFIG STATE_DIR POINT install ENVELOPE_FILE
    python -m tests.upgrade.killchild CONFIG STATE_DIR POINT health healthy|unhealthy

The installer is built as in production (``build_installer``) plus a
``checkpoint`` callback: at POINT it prints ``PAUSED POINT`` on stderr and
blocks reading stdin, so the parent can SIGKILL it there; POINT ``-`` never parks
(the parent kills it whenever it likes).  Should the parent
go away instead (stdin closes), the child exits at once with status 3 rather
than finishing the step.
"""

from __future__ import annotations

import os
import pathlib
import sys

from agent import config as agent_config
from drivers.upgrade.installer import CHECKPOINTS, Checkpoint
from drivers.upgrade.service import build_installer

PARENT_GONE = 3


def park_at(point: str) -> Checkpoint:
    if point != "-" and point not in CHECKPOINTS:
        raise SystemExit(f"unknown checkpoint {point!r}; the installer has {CHECKPOINTS}")

    def checkpoint(name: str) -> None:
        if name == point:
            print(f"PAUSED {name}", file=sys.stderr, flush=True)
            sys.stdin.read()  # until SIGKILL, or EOF if the parent died
            os._exit(PARENT_GONE)

    return checkpoint


def main(argv: list[str]) -> int:
    config_path, state_dir, point, action, argument = argv
    cfg = agent_config.load(pathlib.Path(config_path), state_dir=pathlib.Path(state_dir))
    installer, _ = build_installer(cfg, checkpoint=park_at(point))
    if action == "install":
        installer.install(pathlib.Path(argument).read_bytes())
    elif action == "health":
        installer.health(argument == "healthy")
    else:
        raise SystemExit(f"unknown action {action!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
