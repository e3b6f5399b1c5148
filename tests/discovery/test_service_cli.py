"""The runtime hook and ``edge-agent discover`` against loopback peers.

Everything is pinned to 127.0.0.1: the config binds the client sockets there,
mDNS is limited to the loopback interface and the probes are unicast to the
responder's and the fake router's ports.
"""

from __future__ import annotations

import json
import pathlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from agent.config import load_file
from agent.discovery.responder import endpoint_for_serial
from drivers.cli import main
from drivers.discovery.service import DiscoveryService, build_service
from tests.discovery.conftest import running
from tests.discovery.test_ssdp import FakeUpnpDevice

CONFIG = """
[device]
serial_number = "EA-CLI-1"

[discovery]
interface_address = "127.0.0.1"
mdns_interfaces = ["127.0.0.1"]
reply_delay_max_ms = 0
wsd_port = {port}
http_port = 0
probe_repeats = 2
"""


@pytest.fixture
def config_file(tmp_path: pathlib.Path) -> pathlib.Path:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(port=port))
    return path


@pytest.fixture
def agent_on_loopback(
    config_file: pathlib.Path, tmp_path: pathlib.Path
) -> Iterator[DiscoveryService]:
    config = load_file(config_file)
    config = type(config)(**{**config.__dict__, "state_dir": tmp_path / "state"})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hello_sink:
        hello_sink.bind(("127.0.0.1", 0))
        service = build_service(
            config,
            claimed_fn=lambda: True,
            addresses_fn=lambda: ["127.0.0.1"],
            bind_address="127.0.0.1",
            announce_to=hello_sink.getsockname(),
            join_group=False,
        )
        with running(service):
            yield service


def discover_until(
    argv: list[str], capsys: pytest.CaptureFixture[str], done: Callable[[str], bool]
) -> str:
    deadline = time.monotonic() + 60
    while True:
        assert main(argv) == 0
        out = capsys.readouterr().out
        if done(out) or time.monotonic() > deadline:
            return out


def lists_this_agent(listing: str) -> bool:
    agents = json.loads(listing)["agents"]
    return any(a["properties"].get("sn") == "EA-CLI-1" for a in agents)


@pytest.mark.slow
def test_discover_lists_camera_router_and_agent(
    agent_on_loopback: DiscoveryService,
    config_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert agent_on_loopback.responder is not None
    host, port = agent_on_loopback.responder.address
    with FakeUpnpDevice() as router:
        router_host, router_port = router.sock.getsockname()
        common = [
            "discover",
            "--config",
            str(config_file),
            "--timeout",
            "1",
            "--wsd-target",
            f"{host}:{port}",
            "--ssdp-target",
            f"{router_host}:{router_port}",
            "--gateway",
            "127.0.0.1",
        ]
        # mDNS is multicast on the machine-wide port 5353: under load, or beside
        # another run's responders, one browse can miss the answer. Ask again
        # until the agent shows up (it must), instead of trusting one exchange.
        listing = discover_until([*common, "--json"], capsys, lists_this_agent)
        document = json.loads(listing)
        tables = discover_until(common, capsys, lambda out: "edge-agent-EA-CLI-1" in out)

    assert agent_on_loopback.onvif is not None
    onvif_port = agent_on_loopback.onvif.port
    (camera,) = document["cameras"]
    assert camera["endpoint"] == endpoint_for_serial("EA-CLI-1")
    assert camera["xaddrs"] == [f"http://127.0.0.1:{onvif_port}/onvif/device_service"]
    routers = [d for d in document["upnp"] if d["is_router"]]
    assert [r["location"] for r in routers] == ["http://127.0.0.1:5000/rootDesc.xml"]
    agents = [a for a in document["agents"] if a["properties"].get("sn") == "EA-CLI-1"]
    assert agents and agents[0]["properties"] == {
        "sn": "EA-CLI-1",
        "model": "edge-cam-1",
        "claimed": "1",
        "api": "onvif",
        "path": "/onvif/device_service",
    }
    assert agents[0]["port"] == onvif_port
    assert document["errors"] == {}

    assert "Cameras (WS-Discovery) (1)" in tables
    assert endpoint_for_serial("EA-CLI-1") in tables
    router_line = next(line for line in tables.splitlines() if "rootDesc.xml" in line)
    assert router_line.startswith("yes")
    assert "edge-agent-EA-CLI-1" in tables


def test_discover_with_nothing_answering_prints_empty_tables(
    config_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        target = "{}:{}".format(*silent.getsockname())
        code = main(
            [
                "discover",
                "--config",
                str(config_file),
                "--timeout",
                "0.3",
                "--wsd-target",
                target,
                "--ssdp-target",
                target,
                "--no-agents",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0
    assert "Cameras (WS-Discovery): none found" in out
    assert "Router and UPnP devices" in out


def test_discover_rejects_a_bad_timeout(
    config_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["discover", "--config", str(config_file), "--timeout", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-agent: error: --timeout: must be between 0 and 60 seconds"]


def test_discover_rejects_a_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--wsd-target", "no-port"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_discover_exits_1_when_every_search_fails(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.123 is on no interface here, so binding the client sockets fails locally.
    config = tmp_path / "unbindable.toml"
    config.write_text('[discovery]\ninterface_address = "192.0.2.123"\n')
    code = main(["discover", "--config", str(config), "--timeout", "0.2", "--no-agents"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cameras search failed" in err and "upnp search failed" in err
    assert err.strip().splitlines()[-1].startswith("edge-agent: error: cannot open")
