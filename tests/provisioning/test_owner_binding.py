"""Binding the owner over the LAN API: real HTTP on 127.0.0.1, SPAKE2, real SQLite."""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.auth.cose import raw_public
from agent.auth.principals import PrincipalStore, key_id
from agent.auth.roles import Role
from agent.database import Database
from agent.errors import PolicyError, VerificationError
from agent.feature import Mode
from agent.provisioning.binding import parse_binding_payload, parse_label, verify_binding_proof
from agent.provisioning.limits import LockedOutError, WindowClosedError
from agent.provisioning.pake import InstallerPake, OwnerBinding
from agent.provisioning.settings import WifiBackendKind
from agent.provisioning.wifi import WifiCredentials
from drivers.cli import main
from drivers.compose import compose
from drivers.provisioning.feature import build_provisioning
from drivers.provisioning.lan_client import LanClient
from drivers.provisioning.lan_server import b64encode
from drivers.provisioning.service import ProvisioningService, build_service
from drivers.runtime import Agent
from tests.provisioning.radio_double import RadioDouble
from tests.provisioning.support import START, RecordingAudit, make_config
from tests.provisioning.test_lan_api import (
    PASSPHRASE,
    client_for,
    code_of,
    open_session,
    raw_post,
    wrong_code,
)
from tests.support.clock import ManualClock

ACCOUNT = "acme-site-7"


def new_key() -> bytes:
    return raw_public(ed25519.Ed25519PrivateKey.generate().public_key())


OWNER = new_key()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def principals(tmp_path: pathlib.Path) -> Iterator[PrincipalStore]:
    # The agent's own store, as the feature passes it (ctx.principals).
    db = Database.in_state_dir(tmp_path)
    try:
        yield PrincipalStore(db)
    finally:
        db.close()


@pytest.fixture
def service(
    tmp_path: pathlib.Path,
    clock: ManualClock,
    audit: RecordingAudit,
    principals: PrincipalStore,
) -> Iterator[ProvisioningService]:
    # A window shorter than a session's life, so a live session can outlast it.
    config = make_config(
        tmp_path, lan_max_failed_attempts=3, lan_lockout_seconds=60, window_seconds=200
    )
    radio = RadioDouble({"Home": PASSPHRASE})
    built = build_service(config, radio, audit=audit, clock=clock, principals=principals)
    built.start()
    try:
        yield built
    finally:
        built.stop()


def authenticated(service: ProvisioningService) -> tuple[LanClient, InstallerPake]:
    client = client_for(service)
    return client, client.authenticate(code_of(service), service.binding.serial_number)


def assert_unbound(service: ProvisioningService, principals: PrincipalStore, before: str) -> None:
    assert principals.owner() is None and principals.principals() == []
    assert principals.reload() == before
    assert service.store.load_account() is None


def test_bind_with_the_right_code_makes_the_key_the_owner_and_renames_the_device(
    service: ProvisioningService, principals: PrincipalStore, audit: RecordingAudit
) -> None:
    before = principals.device_id
    client, pake = authenticated(service)
    device_id = client.bind(pake, ACCOUNT, OWNER)
    assert device_id != before
    # What another reader of the database (the runtime, after a restart) sees.
    db = Database.in_state_dir(service.store.credentials_path.parents[1])
    try:
        fresh = PrincipalStore(db)
        owner = fresh.owner()
        assert fresh.device_id == device_id
    finally:
        db.close()
    assert owner is not None
    assert (owner.role, owner.public_key, owner.label, owner.added_by) == (
        Role.OWNER,
        OWNER,
        ACCOUNT,
        "lan",
    )
    assert service.store.load_account() == ACCOUNT
    assert service.status()["bound"] is True
    bound = [d for k, d, _ in audit.records if k == "provisioning.bound"]
    assert bound == [{"channel": "lan", "owner": key_id(OWNER).hex()[:16]}]
    assert ACCOUNT not in repr(audit.records)
    # Binding is not provisioning: the window stays open and the same session goes on.
    assert client.info()["window"] == "open"
    assert client.provision(pake, WifiCredentials("Home", PASSPHRASE))["state"] == "connected"


def test_a_wrong_code_cannot_bind_and_each_try_costs_an_attempt(
    service: ProvisioningService, principals: PrincipalStore
) -> None:
    before = principals.device_id
    client = client_for(service)
    with pytest.raises(VerificationError):
        client.authenticate(wrong_code(service), service.binding.serial_number)
    # A guesser who skips the proof and sends a sealed binding under its own keys.
    for _ in range(2):
        pake, _confirm = open_session(service, wrong_code(service))
        sealed = b64encode(pake.seal_owner_binding(OwnerBinding(ACCOUNT, new_key()), 1))
        body = {"session": pake.session_id, "seq": 1, "sealed": sealed}
        assert raw_post(service, "bind", json.dumps(body).encode()) == (
            403,
            {"error": "verification failed"},
        )
    assert_unbound(service, principals, before)
    # Three failures: locked out, even with the right code.
    with pytest.raises(LockedOutError):
        authenticated(service)


def test_a_second_bind_is_refused_with_409_and_changes_nothing(
    service: ProvisioningService, principals: PrincipalStore, audit: RecordingAudit
) -> None:
    client, pake = authenticated(service)
    device_id = client.bind(pake, ACCOUNT, OWNER)
    other_client, other = authenticated(service)
    intruder = new_key()
    seq = other.next_seq()
    sealed = b64encode(other.seal_owner_binding(OwnerBinding("mallory", intruder), seq))
    body = {"session": other.session_id, "seq": seq, "sealed": sealed}
    status, reply = raw_post(service, "bind", json.dumps(body).encode())
    assert (status, reply) == (409, {"error": "the device is already bound to an owner"})
    with pytest.raises(PolicyError, match="already bound"):
        other_client.bind(other, "mallory", intruder)
    with pytest.raises(PolicyError, match="already bound"):  # not even the owner's own key
        other_client.bind(other, ACCOUNT, OWNER)
    assert [p.public_key for p in principals.principals()] == [OWNER]
    assert principals.reload() == device_id
    assert service.store.load_account() == ACCOUNT
    assert audit.kinds().count("provisioning.bound") == 1
    assert audit.kinds().count("provisioning.bind_refused") == 3


def test_a_retry_in_the_same_session_gets_the_same_device_id(
    service: ProvisioningService, principals: PrincipalStore
) -> None:
    """The installer's answer got lost: asking again must not strand the owner."""
    client, pake = authenticated(service)
    device_id = client.bind(pake, ACCOUNT, OWNER)
    assert client.bind(pake, ACCOUNT, OWNER) == device_id
    with pytest.raises(PolicyError, match="already bound"):
        client.bind(pake, ACCOUNT, new_key())
    assert principals.reload() == device_id


def test_replayed_or_relabelled_bind_messages_are_rejected(
    service: ProvisioningService, principals: PrincipalStore
) -> None:
    before = principals.device_id
    _, pake = authenticated(service)
    # Credentials sealed for the same session and sequence are not a binding.
    creds = b64encode(pake.seal_credentials(WifiCredentials("Home", PASSPHRASE), 4))
    body = {"session": pake.session_id, "seq": 4, "sealed": creds}
    assert raw_post(service, "bind", json.dumps(body).encode())[0] == 403
    sealed = b64encode(pake.seal_owner_binding(OwnerBinding(ACCOUNT, OWNER), 5))
    body = {"session": pake.session_id, "seq": 5, "sealed": sealed}
    status, reply = raw_post(service, "bind", json.dumps(body).encode())
    assert status == 200
    device_id = pake.open_bound(base64.b64decode(str(reply["sealed"])), 5)
    assert raw_post(service, "bind", json.dumps(body).encode())[0] == 403  # same seq
    assert device_id != before and principals.reload() == device_id


@pytest.mark.parametrize(
    "body",
    [
        {"seq": 1, "sealed": "!!!"},
        {"seq": "1", "sealed": "AAAA"},
        {"seq": 1},
    ],
)
def test_malformed_bind_requests_are_rejected(
    service: ProvisioningService, principals: PrincipalStore, body: dict[str, object]
) -> None:
    _, pake = authenticated(service)
    status, _reply = raw_post(
        service, "bind", json.dumps({"session": pake.session_id, **body}).encode()
    )
    assert status == 400
    assert principals.owner() is None


def test_bad_account_inside_the_sealed_binding_is_refused(
    service: ProvisioningService, principals: PrincipalStore
) -> None:
    _, pake = authenticated(service)
    sealed = b64encode(pake.seal_owner_binding(OwnerBinding("bad account!", OWNER), 1))
    body = {"session": pake.session_id, "seq": 1, "sealed": sealed}
    assert raw_post(service, "bind", json.dumps(body).encode())[0] == 400
    assert principals.owner() is None


def test_bind_after_the_wifi_while_the_window_is_open(
    service: ProvisioningService, principals: PrincipalStore, clock: ManualClock
) -> None:
    client, pake = authenticated(service)
    client.provision(pake, WifiCredentials("Home", PASSPHRASE))
    assert service.provisioned and client.info()["window"] == "succeeded"
    # A new session cannot even start: the window closed with the Wi-Fi.
    with pytest.raises(WindowClosedError):
        authenticated(service)
    # Reopened (provisioning.open_window), e.g. for an installer on the Ethernet port.
    service.open_window()
    client, later = authenticated(service)
    device_id = client.bind(later, ACCOUNT, OWNER)
    assert principals.reload() == device_id
    assert principals.owner() is not None


def test_the_session_that_provisioned_the_wifi_may_still_bind(
    service: ProvisioningService, principals: PrincipalStore, clock: ManualClock
) -> None:
    client, pake = authenticated(service)
    client.provision(pake, WifiCredentials("Home", PASSPHRASE))
    assert client.info()["window"] == "succeeded"
    assert client.bind(pake, ACCOUNT, OWNER) == principals.reload()


def test_no_binding_once_the_window_timed_out(
    service: ProvisioningService, principals: PrincipalStore, clock: ManualClock
) -> None:
    before = principals.device_id
    client, pake = authenticated(service)
    clock.advance(201)
    with pytest.raises(WindowClosedError):
        client.bind(pake, ACCOUNT, OWNER)
    assert_unbound(service, principals, before)


# --- the command line -------------------------------------------------------------


def _pem_file(tmp_path: pathlib.Path) -> tuple[pathlib.Path, bytes]:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    path = tmp_path / "owner.pub"
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, raw_public(public)


def _url(service: ProvisioningService) -> str:
    assert service.lan is not None
    return f"http://127.0.0.1:{service.lan.port}"


def test_cli_bind_with_a_pem_key(
    service: ProvisioningService,
    principals: PrincipalStore,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file, raw = _pem_file(tmp_path)
    argv = ["provision", "bind", "--device", _url(service), "--code", code_of(service)]
    assert main([*argv, "--account", ACCOUNT, "--owner-key", str(key_file)]) == 0
    out = capsys.readouterr().out
    owner = principals.owner()
    assert owner is not None and owner.public_key == raw
    assert f"device id {principals.reload()}" in out
    # A second run is refused, and says why.
    assert main([*argv, "--account", ACCOUNT, "--owner-key", str(key_file)]) != 0
    assert "already bound" in capsys.readouterr().err


def test_cli_lan_binds_then_provisions_with_a_hex_key(
    service: ProvisioningService,
    principals: PrincipalStore,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "owner.hex"
    key_file.write_text(OWNER.hex() + "\n")
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE)
    argv = ["provision", "lan", "--device", _url(service), "--code", code_of(service)]
    argv += ["--ssid", "Home", "--passphrase-file", str(secret)]
    assert main([*argv, "--bind", ACCOUNT, "--owner-key", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "bound: acme-site-7" in out and "connected: Home" in out
    owner = principals.owner()
    assert owner is not None and owner.public_key == OWNER
    assert service.provisioned


def test_cli_binding_qr_text_binds_only_the_device_it_was_made_for(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, raw = _pem_file(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text('[device]\nserial_number = "EA-HUB-0007"\n')  # a label needs a real serial
    assert main(["provision", "label", "--config", str(config), "--state-dir", str(tmp_path)]) == 0
    label = capsys.readouterr().out.strip()
    argv = ["provision", "binding-qr", "--label", label, "--account", ACCOUNT]
    assert main([*argv, "--owner-key", str(key_file)]) == 0
    text = capsys.readouterr().out.strip()
    request = parse_binding_payload(text, time.time())
    assert (request.account, request.owner_key) == (ACCOUNT, raw)
    verify_binding_proof(request, parse_label(label))


# --- wired into the agent -----------------------------------------------------------


def test_the_daemon_binds_into_its_own_store_and_follows_the_new_id(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drivers.wifi

    monkeypatch.setattr(drivers.wifi, "open_backend", lambda settings: RadioDouble())
    config = make_config(tmp_path / "state", wifi_backend=WifiBackendKind.WPA_SUPPLICANT)
    config = dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, enabled=False))
    composition = compose(config, Mode.DAEMON, builders=(build_provisioning,), environ={})
    agent = Agent(composition, environ={})
    try:
        agent.start()
        [service] = [s for s in composition.services if isinstance(s, ProvisioningService)]
        assert service.principals is composition.principals
        policy = composition.authoriser.policy
        for name in ("provisioning.status", "provisioning.open_window"):
            assert policy.roles_for(name) == {Role.OWNER, Role.INSTALLER}
        before = agent.topics.device
        client, pake = authenticated(service)
        device_id = client.bind(pake, ACCOUNT, OWNER)
        agent.step()
        assert device_id != before and agent.topics.device == device_id
        assert agent.status()["bound"] is True
    finally:
        agent.shutdown()
