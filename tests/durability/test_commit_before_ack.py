"""Issue 12 item 1: an ``ok`` reply means the command's events are committed.

The real `edge-agent run` takes bursts of signed ``plate.observe`` commands (each
queues one ``plate.match`` event); the moment the first ``ok`` reply arrives the
test kills the process with SIGKILL.  The next process must deliver the event of
every command that was answered ``ok`` -- 30 rounds, 0 accepted-but-lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.durability import (
    KillOnFirstOk,
    delivered_tags,
)

ROUNDS = 30
BURST = 24


@pytest.mark.slow
def test_kill_on_first_ok_reply_loses_no_accepted_event(broker: Broker, tmp_path: Path) -> None:
    rig = KillOnFirstOk(broker.host, broker.port, tmp_path)
    requester, events = rig.requester, rig.events
    accepted_per_round: list[int] = []
    try:
        run = rig.start()
        for rnd in range(ROUNDS):
            assert requester.status() is not None, run.text()[-2000:]
            before = requester.accepted()
            assert rig.burst(f"r{rnd}-", BURST), "no ok reply came"
            accepted = {t for t in requester.accepted() - before if t.startswith(f"r{rnd}-")}
            accepted_per_round.append(len(accepted))
            assert accepted, f"round {rnd}: killed without an ok"
            # The next process replays the outbox: every accepted event must arrive.
            run = rig.start()
            assert events.wait_for(lambda c, a=accepted: a <= delivered_tags(c), 60), (
                f"round {rnd}: accepted but lost {sorted(accepted - delivered_tags(events))}"
            )
        # Events of the last round may have left before its kill: wait until the
        # last process answers, so the stop below finds its signal handlers installed.
        assert requester.status() is not None, run.text()[-2000:]
        assert run.stop() == 0
        assert "Traceback" not in run.text()
    finally:
        rig.close()
    accepted_all = requester.accepted()
    lost = accepted_all - delivered_tags(events)
    print(
        f"\ncommit-before-ack: {ROUNDS} rounds, {len(accepted_all)} accepted "
        f"(per round {min(accepted_per_round)}..{max(accepted_per_round)}), "
        f"{len(accepted_all) - len(lost)} delivered, {len(lost)} accepted-but-lost"
    )
    assert lost == set()
