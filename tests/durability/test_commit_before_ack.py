"""Issue 12 item 1: an ``ok`` reply means the command's events are committed.

The real `edge-agent run` takes bursts of signed ``plate.observe`` commands (each
queues one ``plate.match`` event); the moment the first ``ok`` reply arrives the
test kills the process with SIGKILL.  The next process must deliver the event of
every command that was answered ``ok`` -- 30 rounds, 0 accepted-but-lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.durability import (
    AgentRun,
    Reply,
    Requester,
    agent_toml,
    delivered_tags,
    prepare_state,
    wait_for,
)
from tests.support.mqtt import Collector
from tests.support.owner import Signer

ROUNDS = 30
BURST = 24


@pytest.mark.slow
def test_kill_on_first_ok_reply_loses_no_accepted_event(broker: Broker, tmp_path: Path) -> None:
    owner = Signer()
    state = tmp_path / "state"
    base = prepare_state(state, owner)
    config = tmp_path / "agent.toml"
    agent_toml(config, broker.port)
    events = Collector(broker.host, broker.port, f"{base}/events/#")
    current: dict[str, AgentRun] = {}
    burst = {"prefix": ""}

    def kill_now(reply: Reply) -> None:
        # From the MQTT thread, the instant the first ok of this burst arrives (a late
        # reply of the round before must not kill the next process).
        run = current.get("run")
        if run is not None and burst["prefix"] and reply.tag.startswith(burst["prefix"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.pid, signal.SIGKILL)

    requester = Requester(broker.host, broker.port, base, owner, on_ok=kill_now)
    accepted_per_round: list[int] = []
    try:
        current["run"] = run = AgentRun(config, state)
        for rnd in range(ROUNDS):
            assert requester.status() is not None, run.text()[-2000:]
            before = requester.accepted()
            burst["prefix"] = f"r{rnd}-"
            for k in range(BURST):
                requester.observe(f"r{rnd}-{k}")
            assert wait_for(lambda r=run: r.proc.poll() is not None, 30), "no ok reply came"
            run.kill()
            burst["prefix"] = ""
            accepted = {t for t in requester.accepted() - before if t.startswith(f"r{rnd}-")}
            accepted_per_round.append(len(accepted))
            assert accepted, f"round {rnd}: killed without an ok"
            # The next process replays the outbox: every accepted event must arrive.
            current["run"] = run = AgentRun(config, state)
            assert events.wait_for(lambda c, a=accepted: a <= delivered_tags(c), 60), (
                f"round {rnd}: accepted but lost {sorted(accepted - delivered_tags(events))}"
            )
        # Events of the last round may have left before its kill: wait until the
        # last process answers, so the stop below finds its signal handlers installed.
        assert requester.status() is not None, run.text()[-2000:]
        assert run.stop() == 0
        assert "Traceback" not in run.text()
    finally:
        current["run"].kill()
        requester.close()
        events.close()
    accepted_all = requester.accepted()
    lost = accepted_all - delivered_tags(events)
    print(
        f"\ncommit-before-ack: {ROUNDS} rounds, {len(accepted_all)} accepted "
        f"(per round {min(accepted_per_round)}..{max(accepted_per_round)}), "
        f"{len(accepted_all) - len(lost)} delivered, {len(lost)} accepted-but-lost"
    )
    assert lost == set()
