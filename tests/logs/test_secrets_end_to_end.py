"""Secrets planted through every channel never leave the real agent in any output (issue 11, 7).

``edge-agent run`` against a real mosquitto, with NetworkManager (the fake
``nmcli``) as its Wi-Fi backend, the LAN provisioning API, the LAN log endpoint
and the serial console on a pty.  Hypothesis draws the secrets; each example
plants them through every channel a value reaches the device by:

* enrolment (``edge-agent enrol face`` / ``enrol plate``: names, labels, a plate);
* provisioning over the LAN API (SPAKE2): a failed attempt (unknown network), one
  with a wrong passphrase, then the one that connects -- all three SSIDs and
  passphrases;
* HTTP query strings, percent- and form-encoded, to both LAN APIs (the provisioning
  API logs its request lines at DEBUG, the level this agent runs at);
* MQTT commands (``plate.observe``; ``logs.upload`` with a ``grep`` for a secret),
  and one value nothing marks as personal, sent only in queries and commands.

Then it scans every output for every form of every secret (tests/logs/leaks.py):
the on-device log store's files, a bundle over MQTT, the LAN endpoint, the serial
console and the CLI, and the agent's own stderr (what journald keeps).  Finally
``data.erase`` with account cancellation removes the NetworkManager profile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import cv2
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.errors import PolicyError
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.settings import LogSettings
from agent.provisioning.wifi import WifiCredentials
from drivers.cli import main
from drivers.logs.serial_link import FdChannel, TechnicianClient
from drivers.logs.store import LogStore
from drivers.provisioning.lan_client import LanClient
from drivers.provisioning.store import load_or_create_binding
from drivers.vision.synth import render_face
from tests.logs.leaks import leaks
from tests.support.broker import Broker, free_port
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import spawn_agent

pytestmark = pytest.mark.slow
HERE = pathlib.Path(__file__).resolve().parent
TOKEN = "tech-token-e2e-7731"
SERIAL = "EA-SAMPLE-0001"


@dataclasses.dataclass(frozen=True)
class Secrets:
    name: str
    face_label: str
    plate: str
    plate_label: str
    ssid_gone: str
    ssid_home: str
    wrong_key: str
    home_key: str
    # Nothing tells the device this one is personal: it arrives only in queries and commands.
    unknown: str

    def all(self) -> dict[str, str]:
        return dataclasses.asdict(self)


_word = st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x17F)
_punct = st.sampled_from(list(" '&+%/?=#@"))


def _text(letters: int, most: int) -> st.SearchStrategy[str]:
    """``letters``..``most`` letters and digits with up to three of ``_punct`` among them."""
    return (
        st.tuples(st.lists(_word, min_size=letters, max_size=most), st.lists(_punct, max_size=3))
        .flatmap(lambda parts: st.permutations(parts[0] + parts[1]))
        .map(lambda chars: "".join(chars).strip())
    )


_secrets = st.builds(
    Secrets,
    name=_text(6, 12),
    face_label=_text(6, 12),
    plate=st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=6, max_size=8),
    plate_label=_text(6, 12),
    # SSIDs: 1..32 bytes, so at most 2 bytes a character here.
    ssid_gone=_text(6, 10),
    ssid_home=_text(6, 10),
    # Passphrases: 8..63 bytes, no edge space (nmcli would get the derived PSK).
    wrong_key=_text(10, 14),
    home_key=_text(10, 14),
    unknown=_text(6, 12),
).filter(lambda s: len({v.lower() for v in s.all().values()}) == len(s.all()))


class Device:
    """A state directory and configuration, and the running agent's process."""

    def __init__(self, root: pathlib.Path, broker: Broker, master_tty: str) -> None:
        self.root, self.state = root, root / "state"
        self.nm = root / "nm"
        self.nm.mkdir()
        nmcli = root / "nmcli"
        fake = (HERE.parent / "wifi" / "fake_nmcli.py").read_text()
        nmcli.write_text(f"#!{sys.executable}\n" + fake)
        nmcli.chmod(0o755)
        token = root / "technician.token"
        token.write_text(TOKEN + "\n")
        self.logs_port, self.lan_port = free_port(), free_port()
        self.config = root / "agent.toml"
        self.config.write_text(
            f"[mqtt]\nport = {broker.port}\ntls = 'off'\n[discovery]\ndiscoverable = false\n"
            "[camera]\nenabled = false\n"
            # Drawn faces: the model-free detector and embedder (dlib's find no cartoon).
            "[matching]\nface_detector = 'haar'\nface_embedder = 'lbp'\n"
            f"[logs]\nlevel = 'DEBUG'\nlan_port = {self.logs_port}\n"
            f"technician_token_file = '{token}'\nserial_port = '{master_tty}'\n"
            f"[provisioning]\nwifi_backend = 'networkmanager'\nnmcli_path = '{nmcli}'\n"
            f"lan_bind_address = '127.0.0.1'\nlan_port = {self.lan_port}\n"
            "connect_timeout_seconds = 5.0\n"
        )
        self.proc: subprocess.Popen[Any] | None = None
        self.stderr = ""

    def cli(self, *argv: str) -> None:
        assert main([*argv, "--state-dir", str(self.state)]) == 0, argv

    def start(self) -> None:
        env = {**os.environ, "FAKE_NMCLI_DIR": str(self.nm)}
        self.proc = spawn_agent(
            self.config, self.state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        deadline = time.monotonic() + 30
        while not self._answers():
            assert self.proc.poll() is None, self.proc.communicate()[1]
            assert time.monotonic() < deadline, "the agent's LAN endpoints never came up"
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            for port in (self.logs_port, self.lan_port):
                http_get(port, "/")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            _, err = self.proc.communicate(timeout=30)
            self.stderr = err.decode("utf-8", "replace")
            self.proc = None

    def nm_profiles(self) -> dict[str, Any]:
        path = self.nm / "state.json"
        return json.loads(path.read_text())["connections"] if path.exists() else {}  # type: ignore[no-any-return]


def http_get(port: int, target: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def device(broker: Broker) -> Iterator[tuple[Device, int]]:
    master, slave = os.openpty()
    root = pathlib.Path(tempfile.mkdtemp(prefix="e2e-secrets-"))
    dev = Device(root, broker, os.ttyname(slave))
    try:
        yield dev, master
    finally:
        if dev.proc is not None and dev.proc.poll() is None:
            dev.proc.kill()
            dev.proc.wait()
        os.close(slave)
        os.close(master)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def plant_before_start(dev: Device, s: Secrets) -> None:
    for purpose in ("troubleshooting_logs", "face_recognition", "plate_recognition"):
        dev.cli("consent", "grant", "--yes", purpose)
    images = []
    for i in range(2):
        path = dev.root / f"face{i}.png"
        cv2.imwrite(str(path), render_face(4, __import__("numpy").random.default_rng(i)))
        images.append(str(path))
    dev.cli("enrol", "face", s.name, *images, "--label", s.face_label)
    dev.cli("enrol", "plate", s.plate, "--label", s.plate_label)
    (dev.nm / "scenario.json").write_text(json.dumps({"networks": {s.ssid_home: s.home_key}}))


def plant_over_lan(dev: Device, s: Secrets, code: str) -> None:
    client = LanClient(f"http://127.0.0.1:{dev.lan_port}", timeout=20)
    for ssid, key in ((s.ssid_gone, s.wrong_key), (s.ssid_home, s.wrong_key)):
        with pytest.raises(PolicyError):
            client.provision(client.authenticate(code, SERIAL), WifiCredentials(ssid, key),
                             wait=30, poll_interval=0.2)
    # Query strings to both APIs, every secret in both URL encodings.
    for value in s.all().values():
        for encode in (urllib.parse.quote, urllib.parse.quote_plus):
            query = f"?q={encode(value, safe='')}&n=1"
            http_get(dev.lan_port, f"/provision/v1/info{query}")
            http_get(dev.logs_port, f"/api/v1/logs/bundle{query}&grep={encode(value, safe='')}",
                     TOKEN)
    status = client.provision(client.authenticate(code, SERIAL),
                              WifiCredentials(s.ssid_home, s.home_key), wait=30,
                              poll_interval=0.2)
    assert status["state"] == "connected"


def outputs(dev: Device, s: Secrets, mqtt: Collector, base: str, owner: Signer,
            master: int, code: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    reply = mqtt.request(f"{base}/cmd/logs.upload", {"grep": s.unknown}, signer=owner,
                         sealed=True)
    assert reply["ok"], reply
    found["bundle over MQTT (grep)"] = reply["result"]["bundle"]
    reply = mqtt.request(f"{base}/cmd/logs.upload", {}, signer=owner, sealed=True)
    found["bundle over MQTT"] = reply["result"]["bundle"]
    status, body = http_get(dev.logs_port, "/api/v1/logs/bundle", TOKEN)
    assert status == 200
    found["bundle over the LAN"] = body
    found["bundle over the serial console"] = TechnicianClient(
        FdChannel(os.dup(master)), timeout=20
    ).pull("code", code, {})
    out = dev.root / "cli-bundle.jsonl"
    dev.cli("logs", "bundle", "-o", str(out))
    found["bundle from the CLI"] = out.read_bytes()
    return found


@settings(max_examples=3, deadline=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(s=_secrets)
def test_planted_secrets_never_leave_in_any_output(broker: Broker, s: Secrets) -> None:
    with device(broker) as (dev, master):
        owner = Signer()
        device_id = owner.enrol_in_state(dev.state)
        base = f"edge/{device_id}"
        code = load_or_create_binding(dev.state, SERIAL).verification_code
        plant_before_start(dev, s)
        dev.start()
        mqtt = Collector(broker.host, broker.port, f"{base}/#")
        try:
            plant_over_lan(dev, s, code)
            observed = mqtt.request(f"{base}/cmd/plate.observe",
                                    {"text": s.plate, "camera": s.unknown}, signer=owner)
            assert "ok" in observed
            found = outputs(dev, s, mqtt, base, owner, master, code)
            files = [p for p in (dev.state / "logs").iterdir() if p.is_file()]
            found["on-device log store, raw"] = b"".join(p.read_bytes() for p in files)
            # Sealed at rest: what its readers (bundles, exports) see is what must be clean.
            reader = LogStore(dev.state, LogSettings(), keys=DataKeys(StateLayout(dev.state)))
            store = "\n".join(line for p in files for line in reader.lines_in(p)).encode()
            found["on-device log store"] = store
            # The channels did reach the logs: redaction, not silence, kept them out.
            assert b"[REDACTED:known]" in store and b"lan api" in store
            erased = mqtt.request(f"{base}/cmd/data.erase", {"account_cancellation": True},
                                  signer=owner)
        finally:
            mqtt.close()
            dev.stop()
        found["agent's stderr (journald)"] = dev.stderr.encode()
        assert "lan api" in dev.stderr
        for output, data in found.items():
            for what, secret in s.all().items():
                assert leaks(secret, data) == [], f"{what} leaked into the {output}"
        # Item 9: account cancellation removed the profile the agent saved.
        assert erased["ok"] and erased["result"]["complete"], erased
        assert dev.nm_profiles() == {}
