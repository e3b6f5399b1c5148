"""Every command tried from outside by clients that lack the owner's key.

A real mosquitto with TLS (a CA, server certificate and client certificates
the test makes), the whole agent (every feature; the Wi-Fi radio is the only
double, no radio can run here) and attackers on the same broker: unsigned,
signed by a key the device never trusted, signed by a trusted key of the
wrong role, replayed, signed for another device, answered to a foreign topic.
Each refusal must leave the device as it was and leave an audit record
naming the role that was missing.
"""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from agent.auth.roles import Role
from agent.config import CameraSettings, TlsMode
from agent.provisioning.settings import WifiBackendKind
from drivers.compose import PUBLIC_COMMANDS
from drivers.runtime import Agent
from tests.provisioning.radio_double import RadioDouble
from tests.support.agent_harness import make_config
from tests.support.broker import Broker
from tests.support.mqtt import Collector
from tests.support.owner import Signer
from tests.support.pki import issue_client_cert, make_pki

# Arguments that would succeed if the signature were not checked.
ATTEMPTS: dict[str, dict[str, object]] = {
    "consent.set": {"purpose": "cloud_events", "granted": True},
    "consent.get": {},
    "data.export": {},
    "data.erase": {"account_cancellation": True},
    "data.rotate_keys": {},
    "face.list": {},
    "face.rename": {"name": "Alice", "new_name": "Mallory"},
    "face.remove": {"name": "Alice"},
    "plate.observe": {"text": "AB123", "camera": "gate"},
    "logs.upload": {"tail": 10},
    "upgrade.apply": {},
    "upgrade.check": {},
    "upgrade.status": {},
    "provisioning.open_window": {},
    "provisioning.status": {},
    "auth.grant": {"role": "technician", "public_key": b"\x01" * 32, "label": "me"},
    "auth.revoke": {"kid": "00" * 16},
    "auth.list": {},
    "auth.unbind": {},
    "onvif.set_credentials": {"username": "mallory", "password": "mallory-pass"},
    "device.sealing_key": {},
}


@dataclasses.dataclass
class Rig:
    agent: Agent
    attacker: Collector
    owner: Signer
    base: str
    state: Path
    tls: ssl.SSLContext

    def fingerprint(self) -> tuple[object, ...]:
        """What a refused command must not change."""
        c = self.agent.composition
        files = sorted(
            (str(p.relative_to(self.state)), p.stat().st_size)
            for p in self.state.rglob("*")
            if p.is_file()
            # The outbox (its sequence file too) moves with every event the camera
            # makes; an atomic write in progress shows as a dot-file for a moment.
            and not p.name.startswith(("agent.sqlite", "audit", "outbox-seq", "."))
            and "logs" not in p.parts
            and "snapshots" not in p.parts
        )
        return (
            c.ledger.snapshot(),
            [p.describe() for p in c.principals.principals()],
            c.principals.device_id,
            files,
        )

    def refusals(self, command: str) -> list[dict[str, object]]:
        return [
            dict(e.detail)
            for e in self.agent.composition.audit.entries()
            if e.kind == "command.refused" and e.detail.get("command") == command
        ]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    import drivers.wifi

    tmp = tmp_path_factory.mktemp("attack")
    ca, server_cert, server_key = make_pki(tmp)
    broker = Broker(
        tmp,
        listener_options=(
            f"cafile {ca}\ncertfile {server_cert}\nkeyfile {server_key}\nallow_anonymous true\n"
        ),
    )
    broker.start()
    state = tmp / "state"
    owner = Signer()
    owner.enrol_in_state(state)
    base_config = make_config(state, broker.port, tls=TlsMode.ON, ca_file=ca)
    config = dataclasses.replace(
        base_config,
        camera=CameraSettings(enabled=True, fps=2.0),
        provisioning=dataclasses.replace(
            base_config.provisioning, wifi_backend=WifiBackendKind.WPA_SUPPLICANT
        ),
    )
    original = drivers.wifi.open_backend
    drivers.wifi.open_backend = lambda settings: RadioDouble()  # type: ignore[assignment]
    try:
        agent = Agent.build(config, environ={})
    finally:
        drivers.wifi.open_backend = original
    # Dozens of refusals within a minute here; the flood cap has its own test.
    agent.composition.authoriser.audited_per_minute = 10_000
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    cert, key = issue_client_cert(tmp, "mallory")
    tls = ssl.create_default_context(cafile=str(ca))
    tls.load_cert_chain(str(cert), str(key))
    base = agent.topics.base
    attacker = Collector(broker.host, broker.port, f"{base}/status", tls=tls)
    assert attacker.wait_for(lambda c: any(m.payload == b"online" for m in c.messages), 30)
    try:
        yield Rig(agent, attacker, owner, base, state, tls)
    finally:
        attacker.close()
        agent.request_stop()
        thread.join(20)
        broker.stop()


def test_every_guarded_command_is_in_the_attack_list(rig: Rig) -> None:
    guarded = set(rig.agent.composition.commands) - PUBLIC_COMMANDS
    assert guarded == set(ATTEMPTS), "a new command needs its attack case here"


def _expect_refused(
    rig: Rig, name: str, reply: dict[str, object], before: tuple[object, ...]
) -> None:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == "unauthorized", reply
    assert rig.fingerprint() == before


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_unsigned_command_is_refused_and_audited(rig: Rig, name: str) -> None:
    before = rig.fingerprint()
    audited = len(rig.refusals(name))
    reply = rig.attacker.request(f"{rig.base}/cmd/{name}", ATTEMPTS[name])
    _expect_refused(rig, name, reply, before)
    refusals = rig.refusals(name)
    assert len(refusals) == audited + 1
    assert "owner" in str(refusals[-1]["missing_role"])
    assert refusals[-1]["signer"] == "anonymous"


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_command_signed_by_an_untrusted_key_is_refused(rig: Rig, name: str) -> None:
    before = rig.fingerprint()
    stranger = Signer()
    reply = rig.attacker.request(f"{rig.base}/cmd/{name}", ATTEMPTS[name], signer=stranger)
    _expect_refused(rig, name, reply, before)
    assert rig.refusals(name)[-1]["reason"] == "the signing key is not trusted here"


def _role_without(name: str) -> Role:
    allowed = rig_policy_roles(name)
    return next(r for r in (Role.TECHNICIAN, Role.RECOGNISER, Role.INSTALLER) if r not in allowed)


def rig_policy_roles(name: str) -> frozenset[Role]:
    return {
        "logs.upload": frozenset({Role.OWNER, Role.TECHNICIAN}),
        "plate.observe": frozenset({Role.OWNER, Role.RECOGNISER}),
        "provisioning.open_window": frozenset({Role.OWNER, Role.INSTALLER}),
        "provisioning.status": frozenset({Role.OWNER, Role.INSTALLER}),
    }.get(name, frozenset({Role.OWNER}))


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_command_signed_by_a_trusted_key_of_the_wrong_role_is_refused(rig: Rig, name: str) -> None:
    role = _role_without(name)
    assert rig.agent.composition.authoriser.policy.roles_for(name) == rig_policy_roles(name)
    insider = Signer(role)
    insider.enrol(rig.agent.composition.principals)
    try:
        before = rig.fingerprint()
        reply = rig.attacker.request(f"{rig.base}/cmd/{name}", ATTEMPTS[name], signer=insider)
        _expect_refused(rig, name, reply, before)
        refusal = rig.refusals(name)[-1]
        assert refusal["reason"] == f"role {role.value} may not"
        assert refusal["missing_role"] == " or ".join(
            sorted(r.value for r in rig_policy_roles(name))
        )
    finally:
        rig.agent.composition.principals.remove(insider.kid)


def test_replayed_command_is_refused_even_after_a_restart_of_the_store(rig: Rig) -> None:
    """The same signed bytes twice: the first runs, the copy is refused."""
    payload = rig.owner.sign(rig.base.rsplit("/", 1)[1], "consent.get", {})
    first = rig.attacker.request(f"{rig.base}/cmd/consent.get", None, raw=payload)
    assert first["ok"] is True
    again = rig.attacker.request(f"{rig.base}/cmd/consent.get", None, raw=payload)
    assert again["ok"] is False and again["error"]["code"] == "unauthorized"
    assert "replay" in rig.refusals("consent.get")[-1]["reason"]
    # An older counter than the last one seen is a replay too.
    older = rig.owner.sign(rig.base.rsplit("/", 1)[1], "consent.get", {}, counter=1)
    late = rig.attacker.request(f"{rig.base}/cmd/consent.get", None, raw=older)
    assert late["error"]["code"] == "unauthorized"


def test_command_signed_for_another_device_is_refused(rig: Rig) -> None:
    before = rig.fingerprint()
    grant = {"purpose": "cloud_events", "granted": True}
    payload = rig.owner.sign("d-some-other-device", "consent.set", grant)
    reply = rig.attacker.request(f"{rig.base}/cmd/consent.set", None, raw=payload)
    _expect_refused(rig, "consent.set", reply, before)
    assert rig.refusals("consent.set")[-1]["reason"] == "it was signed for another device"


def test_command_signed_for_another_name_is_refused(rig: Rig) -> None:
    """A signed harmless command re-published under a dangerous name."""
    before = rig.fingerprint()
    payload = rig.owner.sign(rig.base.rsplit("/", 1)[1], "consent.get", {})
    reply = rig.attacker.request(f"{rig.base}/cmd/data.erase", None, raw=payload)
    _expect_refused(rig, "data.erase", reply, before)


def test_stale_command_is_refused(rig: Rig) -> None:
    before = rig.fingerprint()
    old = time.time() - 3600
    grant = {"purpose": "cloud_events", "granted": True}
    payload = rig.owner.sign(rig.base.rsplit("/", 1)[1], "consent.set", grant, now=old)
    reply = rig.attacker.request(f"{rig.base}/cmd/consent.set", None, raw=payload)
    _expect_refused(rig, "consent.set", reply, before)


def test_response_topic_outside_the_device_namespace_is_refused(rig: Rig) -> None:
    """A valid owner command that asks for its reply on another device's command topic."""
    before = rig.fingerprint()
    foreign = "edge/d-victim/cmd/data.erase"
    watcher = Collector("127.0.0.1", rig.attacker.client._port, foreign, tls=rig.tls)
    default_reply = Collector(
        "127.0.0.1",
        rig.attacker.client._port,
        f"{rig.base}/reply/consent.set",
        tls=rig.tls,
    )
    try:
        grant = {"purpose": "cloud_events", "granted": True}
        payload = rig.owner.sign(rig.base.rsplit("/", 1)[1], "consent.set", grant)
        rig.attacker.client.publish(
            f"{rig.base}/cmd/consent.set", payload, qos=1, properties=_response_props(foreign)
        )
        # The refusal on the device's own reply topic is the sentinel.
        assert default_reply.wait_for(lambda c: bool(c.messages), 15)
        answer = cbor2.loads(default_reply.messages[0].payload)
        assert answer["ok"] is False and answer["error"]["code"] == "forbidden"
        assert watcher.messages == []
        assert rig.fingerprint() == before
    finally:
        watcher.close()
        default_reply.close()


def _response_props(topic: str) -> object:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = topic
    props.CorrelationData = b"attack"
    return props


def test_plate_observe_is_no_watch_list_oracle(rig: Rig) -> None:
    """A recogniser may report readings; the reply is the same listed or not."""
    recogniser = Signer(Role.RECOGNISER)
    recogniser.enrol(rig.agent.composition.principals)
    try:
        c = rig.agent.composition
        from agent.purposes import Purpose

        c.ledger.grant(Purpose.PLATE_RECOGNITION, time.time())
        plates = c.feature("plates").services[0]
        plates.core.enrol("AB123", now=time.time())  # type: ignore[attr-defined]
        listed = rig.attacker.request(
            f"{rig.base}/cmd/plate.observe", {"text": "AB123", "camera": "gate"}, signer=recogniser
        )
        unlisted = rig.attacker.request(
            f"{rig.base}/cmd/plate.observe", {"text": "ZZ999", "camera": "gate"}, signer=recogniser
        )
        assert listed == unlisted == {"ok": True, "result": {"accepted": True}}
    finally:
        rig.agent.composition.principals.remove(recogniser.kid)


def test_status_without_signature_reveals_nothing_personal(rig: Rig) -> None:
    reply = rig.attacker.request(f"{rig.base}/cmd/status", {})
    assert reply["ok"] is True
    text = repr(reply["result"])
    serial = rig.agent.config.device.serial_number
    assert serial not in text and "consent" not in reply["result"]


def test_export_travels_sealed_and_holds_no_wifi_passphrase(rig: Rig) -> None:
    from agent.keystore import DataKeys
    from agent.layout import StateLayout
    from agent.provisioning.wifi import WifiCredentials
    from drivers.provisioning.store import FileProvisioningStore

    FileProvisioningStore(rig.state, keys=DataKeys(StateLayout(rig.state))).save_credentials(
        WifiCredentials("HomeNet-5G", "correct horse battery staple")
    )
    plain = rig.attacker.request(f"{rig.base}/cmd/data.export", {}, signer=rig.owner)
    assert plain["ok"] is False and plain["error"]["code"] == "bad_request"  # no reply key
    export = rig.attacker.request(f"{rig.base}/cmd/data.export", {}, signer=rig.owner, sealed=True)
    assert export["ok"] is True
    # What the broker carried: ciphertext only.
    assert b"HomeNet-5G" not in rig.attacker.last_raw_reply
    text = _export_text(export["result"])
    assert "HomeNet-5G" in text
    assert "correct horse battery staple" not in text


def _export_text(result: dict[str, object]) -> str:
    """Everything readable in an export: its fields and every file of its archive."""
    import io
    import zipfile

    parts = [repr(result)]
    archive = result.get("data")
    if isinstance(archive, bytes) and archive.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            parts += [zf.read(n).decode("utf-8", "replace") for n in zf.namelist()]
    return "\n".join(parts)
