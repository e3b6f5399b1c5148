"""Passwords reach the real ``edge-agent run`` only sealed, and nobody on the broker reads them.

One agent process (an NVR hub with one camera, the ONVIF device service on
loopback), a real mosquitto, the owner's ``edge-agent remote`` CLI and an
eavesdropper subscribed to ``#`` -- what a Home Assistant or Node-RED with a
wildcard subscription sees.  The owner sets the ONVIF and the camera
passwords with the CLI (which seals them to the device's key, fetched over
MQTT or pinned from ``auth device-id --json``); the eavesdropper must find no
trace of them in any encoding, nor may the state directory, the audit trail
or the agent's log.  Plaintext passwords, blobs moved into another command or
bound to another device or signature, and blobs sealed to a wrong key are
refused ``bad_request`` and change nothing; the ONVIF service answers with
the sealed password.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from agent.auth.cose import raw_public
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.sealedparams import SEALED, Binding
from drivers.auth.keys import save_private_key
from drivers.camera.credentials import CameraCredentialStore
from tests.discovery.onvif_support import envelope, find_text, post, signed
from tests.support.broker import Broker, free_port
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.process import REPO, spawn_agent

pytestmark = pytest.mark.slow

ONVIF_USER = "nvr"
ONVIF_PASSWORD = "Onvif-Sealed-4417"
CAMERA_PASSWORD = "Camera-Sealed-9083"
PROBE_PASSWORD = "Probe-Never-2271"  # only ever sent in attacks that must be refused


def encodings(secret: str) -> list[bytes]:
    """The spellings a password could leak in: text, UTF-16, hex, base64 at every offset, JSON."""
    raw = secret.encode()
    found = {
        raw,
        secret.encode("utf-16-le"),
        secret.encode("utf-16-be"),
        raw.hex().encode(),
        raw.hex().upper().encode(),
        json.dumps(secret).encode(),
        cbor2.dumps(secret),
    }
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).rstrip(b"=")
            # Drop the characters the unknown neighbours would change.
            start = (offset * 8 + 5) // 6 + (1 if offset else 0)
            found.add(text[start:-2])
    return sorted(found)


def leaks(data: bytes, *secrets: str) -> list[str]:
    return [s for s in secrets for spelled in encodings(s) if spelled in data]


@dataclasses.dataclass
class Rig:
    tmp: pathlib.Path
    state: pathlib.Path
    config: pathlib.Path
    broker: Broker
    owner: Signer
    owner_key: pathlib.Path
    device_id: str
    onvif_port: int
    eavesdropper: Collector
    proc: subprocess.Popen[Any] | None = None

    @property
    def base(self) -> str:
        return f"edge/{self.device_id}"

    def stderr(self) -> str:
        path = self.tmp / "agent.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "drivers", *args]
        return subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )

    def remote(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "remote",
            "--key",
            str(self.owner_key),
            "--device-id",
            self.device_id,
            "--no-tls",
            "--port",
            str(self.broker.port),
            *args,
        )

    def onvif_works(self, password: str) -> bool:
        status, body = post(
            self.onvif_port, signed(envelope("GetDeviceInformation"), ONVIF_USER, password)
        )
        return status == 200 and find_text(body, ".//tds:SerialNumber") == ["EA-SAMPLE-0001"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("sealed")
    broker = Broker(tmp)
    broker.start()
    state = tmp / "state"
    state.mkdir()
    owner = Signer()
    device_id = owner.enrol_in_state(state)
    owner_key = tmp / "owner.pem"
    save_private_key(owner_key, owner.private_key)
    onvif_port, dead_port = free_port(), free_port()
    config = tmp / "agent.toml"
    config.write_text(
        f"[mqtt]\nport = {broker.port}\ntls = 'off'\nreconnect_min_seconds = 0.1\n"
        "reconnect_max_seconds = 0.5\n"
        "[runtime]\ntick_seconds = 0.05\n"
        "[camera]\nenabled = true\nfps = 1\n"
        "[[camera.sources]]\nname = 'front'\n"
        # Nothing listens there: the hub retries; the credentials are what is tested.
        f"url = 'rtsp://127.0.0.1:{dead_port}/front'\n"
        "[provisioning]\nlan_enabled = false\n"
        "[discovery]\ninterface_address = '127.0.0.1'\nmdns_enabled = false\n"
        f"discoverable = false\nhttp_port = {onvif_port}\nreply_delay_max_ms = 0\n"
    )
    eavesdropper = Collector("127.0.0.1", broker.port, "#")
    rig = Rig(tmp, state, config, broker, owner, owner_key, device_id, onvif_port, eavesdropper)
    stderr = (tmp / "agent.stderr").open("ab")
    rig.proc = spawn_agent(config, state, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        status_topic = f"{rig.base}/status"
        started = eavesdropper.wait_for(lambda c: status_topic in c.topics(), 30)
        assert started, f"agent never came online:\n{rig.stderr()[-3000:]}"
        yield rig
    finally:
        if rig.proc.poll() is None:
            rig.proc.terminate()
            rig.proc.wait(20)
        stderr.close()
        eavesdropper.close()
        broker.stop()


def sealing_key_on_device(rig: Rig) -> bytes:
    done = rig.cli(
        "auth", "device-id", "--json", "--state-dir", str(rig.state), "--config", str(rig.config)
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["device_id"] == rig.device_id
    return bytes.fromhex(shown["sealing_key"])


def captured(rig: Rig, name: str) -> list[bytes]:
    topic = f"{rig.base}/cmd/{name}"
    return [bytes(m.payload) for m in list(rig.eavesdropper.messages) if m.topic == topic]


def sealed_blob_of(command: bytes) -> bytes:
    """The ``sealed`` argument of a captured signed command, as any reader on ``#`` can."""
    body = cbor2.loads(cbor2.loads(command).value[2])
    blob = body["args"][SEALED]
    assert isinstance(blob, bytes)
    return blob


def test_01_the_cli_seals_the_passwords_and_the_eavesdropper_reads_none(rig: Rig) -> None:
    pinned = sealing_key_on_device(rig)
    # ONVIF: the key asked for over MQTT (device.sealing_key), as the CLI does by default.
    onvif = rig.remote(
        "onvif.set_credentials", f"username={ONVIF_USER}", f"password={ONVIF_PASSWORD}"
    )
    assert onvif.returncode == 0, onvif.stderr
    assert json.loads(onvif.stdout) == {"generated": False, "username": ONVIF_USER}
    # Camera: the key pinned from the device itself.
    camera = rig.remote(
        "--sealing-key",
        pinned.hex(),
        "camera.set_credentials",
        "camera=front",
        "username=viewer",
        f"password={CAMERA_PASSWORD}",
    )
    assert camera.returncode == 0, camera.stderr
    assert json.loads(camera.stdout) == {"camera": "front", "username": "viewer"}
    fetched = [m for m in rig.eavesdropper.messages if m.topic.endswith("/cmd/device.sealing_key")]
    assert len(fetched) == 1  # asked once, by the ONVIF call; the camera call had it pinned

    # The eavesdropper did see both commands (the search below is not vacuous) ...
    for name in ("onvif.set_credentials", "camera.set_credentials"):
        (command,) = captured(rig, name)
        assert len(sealed_blob_of(command)) > 32
    # ... and nowhere, in no encoding, a password.
    with rig.eavesdropper._lock:
        seen = [(m.topic.encode(), bytes(m.payload)) for m in rig.eavesdropper.messages]
    assert seen
    for topic, payload in seen:
        assert leaks(topic + payload, ONVIF_PASSWORD, CAMERA_PASSWORD) == [], topic
    assert ONVIF_PASSWORD not in onvif.stdout + onvif.stderr
    assert rig.onvif_works(ONVIF_PASSWORD)
    assert not rig.onvif_works(ONVIF_PASSWORD + "x")


def test_02_a_plaintext_password_is_refused_naming_the_sealed_form(rig: Rig) -> None:
    for name, args in (
        ("onvif.set_credentials", {"username": ONVIF_USER, "password": PROBE_PASSWORD}),
        (
            "camera.set_credentials",
            {"camera": "front", "username": "x", "password": PROBE_PASSWORD},
        ),
    ):
        reply = rig.eavesdropper.request(
            f"{rig.base}/cmd/{name}", args, signer=rig.owner, sealed=True
        )
        assert reply["ok"] is False, reply
        assert reply["error"]["code"] == "bad_request"
        message = reply["error"]["message"]
        assert "sealed" in message and "edge-agent remote" in message, message
        assert PROBE_PASSWORD not in message
    assert rig.onvif_works(ONVIF_PASSWORD)


def test_02b_the_cli_with_a_wrong_pinned_key_fails_closed(rig: Rig) -> None:
    wrong = raw_public(x25519.X25519PrivateKey.generate().public_key()).hex()
    secret = "Pinned-Wrong-6630"
    for key, says in ((wrong, "sealed to another key"), ("00" * 32, "not a usable X25519")):
        done = rig.remote(
            "--sealing-key",
            key,
            "onvif.set_credentials",
            f"username={ONVIF_USER}",
            f"password={secret}",
        )
        assert done.returncode == 2, done.stderr
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    with rig.eavesdropper._lock:
        seen = b"".join(m.topic.encode() + bytes(m.payload) for m in rig.eavesdropper.messages)
    assert b"sealed" in seen and leaks(seen, secret) == []
    assert rig.onvif_works(ONVIF_PASSWORD)


def test_03_a_sealed_blob_moved_elsewhere_is_refused(rig: Rig) -> None:
    onvif_command = captured(rig, "onvif.set_credentials")[0]  # the CLI's, in test_01
    blob = sealed_blob_of(onvif_command)
    topic = f"{rig.base}/cmd/onvif.set_credentials"
    # The captured command as it was: a replay (its counter is spent).
    answer = rig.eavesdropper.request(topic, None, raw=onvif_command)
    assert answer["ok"] is False and answer["error"]["code"] == "unauthorized", answer
    # The owner's own fresh signature around the old blob: bound to the old counter.
    for name, args in (
        ("onvif.set_credentials", {"username": "mallory", SEALED: blob}),
        ("camera.set_credentials", {"camera": "front", "username": "mallory", SEALED: blob}),
    ):
        reply = rig.eavesdropper.request(
            f"{rig.base}/cmd/{name}", args, signer=rig.owner, sealed=True
        )
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
        assert "does not open" in reply["error"]["message"]
    # A blob sealed to this device's key for another device id (an earlier binding).
    key = sealing_key_on_device(rig)
    other = Binding(
        "d00000000000000ff", "onvif.set_credentials", rig.owner.next_counter(), int(time.time())
    )
    reply = rig.eavesdropper.request(
        topic,
        None,
        raw=rig.owner.sign(
            rig.device_id,
            "onvif.set_credentials",
            {
                "username": "mallory",
                "reply_key": raw_public(x25519.X25519PrivateKey.generate().public_key()),
            },
            secrets={"password": PROBE_PASSWORD},
            sealing_key=key,
            sealed_for=other,
        ),
    )
    assert reply["ok"] is False and "does not open" in reply["error"]["message"], reply
    assert rig.onvif_works(ONVIF_PASSWORD)


def test_04_a_blob_sealed_to_a_wrong_key_is_refused(rig: Rig) -> None:
    wrong = raw_public(x25519.X25519PrivateKey.generate().public_key())
    reply = rig.eavesdropper.request(
        f"{rig.base}/cmd/onvif.set_credentials",
        {"username": "mallory"},
        signer=rig.owner,
        secrets={"password": PROBE_PASSWORD},
        sealing_key=wrong,
        sealed=True,
    )
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert "sealed to another key" in reply["error"]["message"]
    # The right key works through the same test path (the refusal was the key's).
    reply = rig.eavesdropper.request(
        f"{rig.base}/cmd/onvif.set_credentials",
        {"username": ONVIF_USER},
        signer=rig.owner,
        secrets={"password": ONVIF_PASSWORD},
        sealing_key=sealing_key_on_device(rig),
        sealed=True,
    )
    assert reply["ok"] is True, reply
    assert rig.onvif_works(ONVIF_PASSWORD)


def test_05_no_password_at_rest_in_clear_nor_in_the_log_and_the_camera_has_its_own(
    rig: Rig,
) -> None:
    assert rig.proc is not None
    rig.proc.terminate()
    assert rig.proc.wait(20) == 0 or rig.proc.returncode is not None
    secrets = (ONVIF_PASSWORD, CAMERA_PASSWORD, PROBE_PASSWORD)
    files = [p for p in rig.state.rglob("*") if p.is_file()]
    assert any(p.name == "audit.sqlite" for p in files)
    for path in files:
        assert leaks(path.read_bytes(), *secrets) == [], path
    assert leaks(rig.stderr().encode(), *secrets) == []
    with rig.eavesdropper._lock:
        messages = [(m.topic, bytes(m.payload)) for m in rig.eavesdropper.messages]
    # The probe went out in clear (test_02, the attack); nothing the device sent echoes it.
    assert leaks(b"".join(t.encode() + p for t, p in messages), *secrets[:2]) == []
    replies = [p for t, p in messages if "/cmd/" not in t]
    assert len(replies) > 5 and leaks(b"".join(replies), *secrets) == []
    # The audit trail recorded each setting (without the password).
    shown = rig.cli(
        "audit", "show", "--json", "--state-dir", str(rig.state), "--config", str(rig.config)
    )
    assert shown.returncode == 0, shown.stderr
    assert "camera.set_credentials" in shown.stdout and "onvif.set_credentials" in shown.stdout
    assert leaks(shown.stdout.encode(), *secrets) == []
    # The camera's credentials are the ones sealed to the device, opened there.
    layout = StateLayout(rig.state)
    stored = CameraCredentialStore(layout, DataKeys(layout)).get("front")
    assert stored is not None and (stored.username, stored.password) == ("viewer", CAMERA_PASSWORD)
