"""Every port the agent advertises over mDNS answers, and nothing else is advertised.

The real ``edge-agent run`` with mDNS on loopback, its ONVIF device service and
the LAN provisioning API (a Wi-Fi backend whose ``nmcli`` is a stand-in never
reached here) with a 30 s window.  While the window is open both are
announced and both answer; once it has closed the provisioning instance is
withdrawn (the API itself lingers a little for a last status, unadvertised)
and the ONVIF one stays, still answering.  In process: an ONVIF port someone
else holds is neither handed out by WS-Discovery nor announced.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import socket
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from agent.discovery import mdns
from drivers.discovery.mdns_zc import browse
from drivers.discovery.service import build_service
from tests.discovery.conftest import loopback_config, running
from tests.discovery.onvif_support import envelope, post
from tests.support.broker import free_port
from tests.support.process import spawn_agent

pytestmark = pytest.mark.slow

LOOPBACK = ["127.0.0.1"]


def answers(peer: mdns.MdnsPeer) -> bool:
    """The advertised service really answers on the advertised address and port."""
    (address,) = peer.addresses
    path = peer.properties.get("path", "/")
    try:
        if peer.properties.get("api") == mdns.ONVIF_API:
            status, body = post(peer.port, envelope("GetSystemDateAndTime"), path, host=address)
            return status == 200 and b"SystemDateAndTime" in body
        connection = http.client.HTTPConnection(address, peer.port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status == 200 and "window" in json.loads(response.read())
        finally:
            connection.close()
    except (OSError, ValueError):
        return False


def browse_ours(serial: str, done: Callable[[list[mdns.MdnsPeer]], bool]) -> list[mdns.MdnsPeer]:
    deadline = time.monotonic() + 90
    while True:
        peers = [
            p
            for p in browse(timeout=1.5, interfaces=LOOPBACK, service_types=[mdns.HTTP_SERVICE])
            if p.properties.get("sn") == serial
        ]
        if done(peers) or time.monotonic() > deadline:
            return peers


def apis(peers: list[mdns.MdnsPeer]) -> set[str]:
    return {p.properties.get("api", "") for p in peers}


def test_every_advertised_port_answers_and_setup_goes_with_its_window(
    tmp_path: pathlib.Path,
) -> None:
    serial = f"EA-MDNS-{uuid.uuid4().hex[:8]}"
    onvif_port, lan_port = free_port(), free_port()
    nmcli = tmp_path / "nmcli"
    nmcli.write_text("#!/bin/sh\nexit 0\n")
    nmcli.chmod(0o755)
    config = tmp_path / "agent.toml"
    config.write_text(
        "[mqtt]\nenabled = false\n[camera]\nenabled = false\n[runtime]\ntick_seconds = 0.05\n"
        f"[device]\nserial_number = '{serial}'\n"
        "[provisioning]\nwifi_backend = 'networkmanager'\n"
        f"nmcli_path = '{nmcli}'\nlan_bind_address = '127.0.0.1'\nlan_port = {lan_port}\n"
        "window_seconds = 30\n"
        "[discovery]\ninterface_address = '127.0.0.1'\nmdns_interfaces = ['127.0.0.1']\n"
        f"wsd_port = {free_port()}\nhttp_port = {onvif_port}\naddress_check_seconds = 1.0\n"
    )
    stderr = tmp_path / "agent.stderr"
    with stderr.open("wb") as err:
        proc = spawn_agent(config, tmp_path / "state", stdout=subprocess.DEVNULL, stderr=err)
    try:
        both = browse_ours(serial, lambda found: apis(found) == {"onvif", "provisioning"})
        assert apis(both) == {"onvif", "provisioning"}, stderr.read_text()[-3000:]
        assert all(answers(p) for p in both)
        assert {p.port for p in both} == {onvif_port, lan_port}
        # The window (30 s from the first start) closes: the setup instance goes.
        after = browse_ours(serial, lambda found: apis(found) == {"onvif"})
        assert apis(after) == {"onvif"}
        assert all(answers(p) for p in after)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
    assert "Traceback" not in stderr.read_text()


def test_an_onvif_port_that_is_not_ours_is_neither_handed_out_nor_announced(
    tmp_path: pathlib.Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        config = loopback_config(
            tmp_path, http_port=taken, mdns_enabled=True, mdns_interfaces=("127.0.0.1",)
        )
        service = build_service(
            config, addresses_fn=lambda: ["127.0.0.1"], bind_address="127.0.0.1",
            join_group=False, announce_to=("127.0.0.1", 9),
        )
        with running(service):
            assert service.onvif is not None and service.onvif.port is None
            assert service.responder is not None and service.responder.responder is not None
            assert service.responder.responder.target.xaddrs == ()
            assert service.announcer is not None and service.announcer.announced == {}
