"""NVR hub adoption end to end, between two network namespaces joined by a veth.

Namespace A is a camera on the LAN: the agent's own discovery service
(WS-Discovery responder and ONVIF device service, its ONVIF user in a file)
and the real RTSP server it points GetStreamUri at.  Namespace B is the hub:
the real ``edge-agent run`` with ``[camera] adopt_discovered``, its own
WS-Discovery responder on (it must not adopt itself) and a mosquitto of its
own, which this test reaches through a Unix socket (not namespaced).

The hub must list the camera as pending credentials, capture nothing until
the owner's signed ``camera.set_credentials`` (password sealed to the device),
then publish motion under the camera's scope-derived name, and stop capturing
it once it says Bye -- keeping its name.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest

from drivers.cli import main as cli
from tests.support.agent_harness import device_base
from tests.support.broker import free_port, mosquitto_binary
from tests.support.mqtt import Collector
from tests.support.owner import Signer, sealing_key_in_state

pytestmark = [pytest.mark.netns, pytest.mark.slow]
REPO = pathlib.Path(__file__).resolve().parents[2]
CAMERA_ADDRESS, HUB_ADDRESS = "192.168.77.1", "192.168.77.2"
ONVIF_USER, ONVIF_PASSWORD = "hubuser", "Lobby-Onvif-Pass-4471"
# The camera names itself "Lobby Cam" in its ONVIF scopes: the hub calls it lobby-cam.
MODEL, NAME = "Lobby Cam", "lobby-cam"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 'ip' is not installed")
    tag = f"{os.getpid() % 100000}"
    a, b = f"eahub-a-{tag}", f"eahub-b-{tag}"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", a], capture_output=True, check=False)
        pytest.skip(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", f"ha{tag}", "netns", a, "type", "veth", "peer", "name", f"hb{tag}",
            "netns", b)  # fmt: skip
        for ns, dev, address in ((a, f"ha{tag}", CAMERA_ADDRESS), (b, f"hb{tag}", HUB_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", b], capture_output=True, check=False)


class UnixCollector(Collector):
    """The test's MQTT client, to a broker in another namespace through its Unix socket."""

    def __init__(self, path: str, topic: str) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
            transport="unix",
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect(path)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not confirmed"


@pytest.fixture
def short_dir() -> Iterator[pathlib.Path]:
    # A Unix socket path must stay under 108 bytes: pytest's tmp_path may not.
    path = pathlib.Path(tempfile.mkdtemp(prefix="eahub-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _in(ns: str, *command: str, **popen: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *command], cwd=REPO, **popen)


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def motion_phases(collector: Collector, camera: str) -> list[str]:
    return [
        e["f"]["phase"]
        for e in collector.events()
        if e["type"] == "motion" and e["f"]["camera"] == camera
    ]


def test_hub_adopts_a_discovered_camera_once_the_owner_gives_its_credentials(
    namespaces: tuple[str, str], tmp_path: pathlib.Path, short_dir: pathlib.Path
) -> None:
    a, b = namespaces
    socket_path = str(short_dir / "mqtt.sock")
    port = free_port()
    (short_dir / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nlistener 0 {socket_path}\nallow_anonymous true\n"
        "persistence false\nuser root\nlog_type error\n"
    )
    broker = _in(b, mosquitto_binary(), "-c", str(short_dir / "mosquitto.conf"),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    camera = _in(
        a, sys.executable, "-m", "tests.hub.netns_camera", str(tmp_path / "camera"),
        CAMERA_ADDRESS, MODEL, f"{ONVIF_USER}:{ONVIF_PASSWORD}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    hub: subprocess.Popen[Any] | None = None
    sub: Collector | None = None
    state = tmp_path / "hub-state"
    hub_log = tmp_path / "hub.log"
    try:
        assert camera.stdout is not None and camera.stdout.readline().strip() == "ready"
        signer = Signer()
        signer.enrol_in_state(state)
        base = device_base(state)
        config = tmp_path / "hub.toml"
        config.write_text(
            f'[device]\nserial_number = "EA-HUB-0001"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = "off"\n'
            "reconnect_min_seconds = 0.1\nreconnect_max_seconds = 0.5\n"
            "[runtime]\ntick_seconds = 0.05\n"
            "[camera]\nfps = 5\nmotion_update_seconds = 0.5\nadopt_discovered = true\n"
            'adopt_probe_seconds = 2\nadopt_missing_probes = 2\nadopt_transport = "udp"\n'
            f'[discovery]\ninterface_address = "{HUB_ADDRESS}"\nmdns_enabled = false\n'
            "reply_delay_max_ms = 0\ndefault_timeout_seconds = 1.0\nprobe_repeats = 2\n"
        )
        args = ["--config", str(config), "--state-dir", str(state)]
        assert cli(["consent", "grant", "--yes", "cloud_events", *args]) == 0
        with hub_log.open("wb") as log:
            hub = _in(b, sys.executable, "-m", "drivers", "run", *args,
                      stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        while not os.path.exists(socket_path):
            assert broker.poll() is None, "mosquitto exited"
            threading.Event().wait(0.05)
        sub = UnixCollector(socket_path, f"{base}/#")
        assert sub.wait_for(lambda c: any(e["type"] == "device.status" for e in c.events()), 30)

        def cameras() -> dict[str, Any]:
            assert sub is not None
            reply = sub.request(f"{base}/cmd/camera.list", {}, signer=signer)
            assert reply["ok"] is True, reply
            return dict(reply["result"])

        listed: dict[str, Any] = {}

        def pending(_: Collector) -> bool:
            listed.update(cameras())
            # Two searches done: the camera answered both, the hub's own answer was heard too.
            return bool(listed["cameras"]) and int(listed["adoption"]["searches"]) >= 2

        assert sub.wait_for(pending, 30), listed
        (entry,) = listed["cameras"]  # the camera, never the hub itself
        assert entry["name"] == NAME and entry["source"] == "discovered"
        assert entry["status"] == "pending credentials" and entry["present"] is True
        assert entry["address"] == CAMERA_ADDRESS
        assert entry["onvif"] == f"http://{CAMERA_ADDRESS}:8080/onvif/device_service"
        # Pending: no capture started (nothing captured, no motion from it yet).
        assert entry["frames"] == 0 and motion_phases(sub, NAME) == []

        reply = sub.request(
            f"{base}/cmd/camera.set_credentials",
            {"camera": NAME, "username": ONVIF_USER},
            signer=signer,
            secrets={"password": ONVIF_PASSWORD},
            sealing_key=sealing_key_in_state(state),
        )
        assert reply["ok"] is True, reply
        assert sub.wait_for(lambda c: "new" in motion_phases(c, NAME), 60), (
            f"no motion from {NAME}: {cameras()}"
        )
        topic = f"{base}/camera/{NAME}/motion"
        assert sub.wait_for(
            lambda c: any(m.topic == topic and bytes(m.payload) == b"ON" for m in c.messages), 15
        )
        (entry,) = cameras()["cameras"]
        assert entry["status"] == "streaming" and entry["frames"] > 0, entry

        # The camera leaves (Bye): its capture stops, its motion ends, its name stays.
        assert camera.stdin is not None
        camera.stdin.close()
        camera.wait(20)
        assert sub.wait_for(lambda c: cameras()["cameras"][0]["status"] == "vanished", 20)
        assert sub.wait_for(lambda c: "end" in motion_phases(c, NAME), 20)
        (entry,) = cameras()["cameras"]
        assert entry["name"] == NAME and entry["present"] is False
    finally:
        if sub is not None:
            sub.close()
        if hub is not None:
            _stop(hub)
        _stop(camera)
        _stop(broker)
    output = hub_log.read_text(errors="replace")
    assert "Traceback" not in output, output[-3000:]
    assert ONVIF_PASSWORD not in output
    record = json.loads((state / "adopted-cameras.json").read_text())
    assert [c["name"] for c in record["cameras"]] == [NAME]
    assert ONVIF_PASSWORD not in json.dumps(record)
