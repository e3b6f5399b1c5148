"""A child process that emits numbered motion events through a real Agent.

Usage: python -m tests.support.agent_proc STATE_DIR PORT COUNT
Prints ``committed K`` once events 0..K are durably in the outbox.
"""

from __future__ import annotations

import pathlib
import sys
import time

from tests.support.agent_harness import make_config, motion, spine_agent


def main() -> None:
    state_dir, port, count = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    agent = spine_agent(make_config(state_dir, port))
    agent.start()
    for k in range(count):
        agent.emit(motion(k))
        if k % 10 == 9:
            agent.step()
            print(f"committed {k}", flush=True)
            time.sleep(0.002)
    while True:
        agent.step()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
