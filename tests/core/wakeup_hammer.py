"""Child for test_wakeup.py: a timer signal sets the wake-up while the loop waits and clears.

Usage: ``python -m tests.core.wakeup_hammer wakeup|event SECONDS``; prints
``passes fired`` and exits 0 when the loop survived.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType

from drivers.wakeup import Wakeup


def main(kind: str, seconds: float) -> int:
    wake: Wakeup | threading.Event = Wakeup() if kind == "wakeup" else threading.Event()
    fired = 0

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        fired += 1
        wake.set()  # what the agent's SIGTERM handler does

    signal.signal(signal.SIGALRM, on_alarm)
    # Every 0.7 ms: the handler lands inside wait() and clear() thousands of times.
    signal.setitimer(signal.ITIMER_REAL, 0.0007, 0.0007)
    passes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        wake.wait(0.001)
        wake.clear()
        passes += 1
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(passes, fired)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
