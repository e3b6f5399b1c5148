"""A connection flood against the real ``edge-agent run``'s LAN provisioning API.

The API shares the process with the main loop (and, before the bounded
server, shared its file descriptors with no limit).  The agent runs with a
Wi-Fi backend (a stand-in ``nmcli`` that is never called here), systemd's
default fd limit and a watchdog; the attacker floods from 127.0.0.2 or from a
hundred loopback addresses while an installer asks ``/provision/v1/info``
from 127.0.0.1.  Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import pathlib
import socket
import time

import pytest

from tests.support.attacks import close_all, get, get_until_ok, idle_connections
from tests.support.broker import free_port
from tests.support.watchdog import WATCHDOG_SECONDS, WatchedAgent, raise_own_nofile

pytestmark = pytest.mark.slow

INFO = "/provision/v1/info"
FD_SLACK = 16 + 24


@pytest.mark.parametrize(
    "sources",
    [["127.0.0.2"], [f"127.0.4.{n}" for n in range(1, 111)]],
    ids=["one_peer", "many_addresses"],
)
def test_half_open_connection_flood_on_the_provisioning_api_attack(
    tmp_path: pathlib.Path, sources: list[str]
) -> None:
    raise_own_nofile(4096)
    port = free_port()
    nmcli = tmp_path / "nmcli"
    nmcli.write_text("#!/bin/sh\nexit 0\n")  # the flood never gets as far as the radio
    nmcli.chmod(0o755)
    agent = WatchedAgent(
        tmp_path,
        "[discovery]\ndiscoverable = false\n"
        "[provisioning]\nwifi_backend = 'networkmanager'\n"
        f"nmcli_path = '{nmcli}'\nlan_bind_address = '127.0.0.1'\nlan_port = {port}\n",
    )
    attack: list[socket.socket] = []
    try:
        agent.start()
        up = get_until_ok(port, INFO)[0]
        assert up == 200, f"the provisioning API never came up:\n{agent.stderr()[-2000:]}"
        baseline = agent.open_fds()
        since = time.monotonic()
        attack = idle_connections(port, 1100, sources, pace=24)
        assert len(attack) == 1100
        status, took = get_until_ok(port, INFO)
        assert status == 200, "an installer's request failed during the flood"
        assert agent.open_fds() <= baseline + FD_SLACK
        agent.wait_pings(5)
        close_all(attack)
        status, body = get(port, INFO)
        assert status == 200 and "window" in json.loads(body)
        agent.wait_pings(3)
        gap = agent.max_gap(since)
        assert agent.stop() == 0
    finally:
        close_all(attack)
        agent.stop()
    assert "Traceback" not in agent.stderr()
    print(f"provisioning flood ({len(sources)} sources): max watchdog gap {gap:.2f} s, "
          f"installer answered in {took:.2f} s")
    assert gap < WATCHDOG_SECONDS / 2
