"""WS-Discovery over real multicast, inside two network namespaces joined by a veth.

The loopback interface does not carry the 239.255.255.250 group reliably, so
these tests build their own link: namespace A runs the responder, namespace B
the listener and the client.  All traffic stays inside these namespaces.  Each
side has a private address (192.168.77.x) and a public-looking one
(203.0.113.x, TEST-NET-3) to check that only private sources are answered.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.config import DeviceSettings
from agent.discovery.responder import endpoint_for_serial

pytestmark = [pytest.mark.netns, pytest.mark.slow]
REPO = pathlib.Path(__file__).resolve().parents[2]
A_PRIVATE, B_PRIVATE = "192.168.77.1", "192.168.77.2"
A_PUBLIC, B_PUBLIC = "203.0.113.1", "203.0.113.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 'ip' is not installed")
    tag = f"{os.getpid() % 100000}"
    a, b = f"eawsd-a-{tag}", f"eawsd-b-{tag}"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", a], capture_output=True, check=False)
        pytest.skip(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
    try:
        _ip(
            "link",
            "add",
            f"va{tag}",
            "netns",
            a,
            "type",
            "veth",
            "peer",
            "name",
            f"vb{tag}",
            "netns",
            b,
        )
        for ns, dev, private, public in (
            (a, f"va{tag}", A_PRIVATE, A_PUBLIC),
            (b, f"vb{tag}", B_PRIVATE, B_PUBLIC),
        ):
            _ip("-n", ns, "addr", "add", f"{private}/24", "dev", dev)
            _ip("-n", ns, "addr", "add", f"{public}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", b], capture_output=True, check=False)


def _peer(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.discovery.netns_peer", *args]


def _start(ns: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        _peer(ns, *args), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _probe(ns: str, address: str) -> list[dict[str, object]]:
    done = subprocess.run(
        _peer(ns, "client", address, "1.5"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: list[dict[str, object]] = json.loads(done.stdout)
    return result


def test_multicast_probe_hello_and_bye_between_namespaces(
    namespaces: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    a, b = namespaces
    listener = _start(b, "listener", B_PRIVATE)
    responder = _start(a, "responder", str(tmp_path), A_PRIVATE)
    try:
        cameras = _probe(b, B_PRIVATE)
    finally:
        responder.communicate(timeout=10)
    heard, _ = listener.communicate(timeout=15)
    (camera,) = cameras
    assert camera["endpoint"] == endpoint_for_serial(DeviceSettings().serial_number)
    assert camera["address"] == A_PRIVATE
    assert camera["xaddrs"] == [f"http://{A_PRIVATE}:8080/onvif/device_service"]
    # The XAddrs answer from the other namespace: the ONVIF device service is there.
    assert camera["xaddr_status"] == [200]
    # B's own multicast probes loop back to its listener too; they prove the group works.
    messages = [m for m in json.loads(heard) if m["kind"] != "Probe"]
    assert [m["kind"] for m in messages] == ["Hello", "Bye"]
    assert {m["source"] for m in messages} == {A_PRIVATE}
    assert {m["instance_id"] for m in messages} == {1}


def test_probe_from_a_public_source_is_not_answered(
    namespaces: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    a, b = namespaces
    responder = _start(a, "responder", str(tmp_path), A_PRIVATE)
    try:
        from_public = _probe(b, B_PUBLIC)
        # Sentinel: a probe from the private address after it must be answered.
        from_private = _probe(b, B_PRIVATE)
    finally:
        out, _ = responder.communicate(timeout=10)
    stats = json.loads(out)
    assert len(from_private) == 1
    # Every public probe (two ONVIF types, each sent twice) reached the responder,
    # which refused it as foreign; only the two private ones were answered.
    assert stats["foreign_source"] == 4
    assert stats["answered"] == 2
    assert from_public == []
