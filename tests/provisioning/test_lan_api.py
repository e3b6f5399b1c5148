"""The LAN provisioning API over real HTTP on 127.0.0.1 with SPAKE2."""

from __future__ import annotations

import base64
import json
import logging
import pathlib
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agent.errors import DecodeError, TooLargeError, VerificationError
from agent.provisioning.limits import LockedOutError, WindowClosedError
from agent.provisioning.pake import DevicePake, InstallerPake
from agent.provisioning.wifi import ConnectOutcome, WifiCredentials
from drivers.provisioning.lan_client import LanClient
from drivers.provisioning.lan_server import b64encode
from drivers.provisioning.service import STATUS_GRACE_SECONDS, ProvisioningService, build_service
from tests.provisioning.radio_double import DOUBLE_ADDRESS, RadioDouble
from tests.provisioning.support import START, RecordingAudit, make_config, wait_for
from tests.support.clock import ManualClock

PASSPHRASE = "planted-Passphrase-7f3a9c"


@pytest.fixture
def radio() -> RadioDouble:
    return RadioDouble({"Home": PASSPHRASE, "Cafe": None})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def service(
    tmp_path: pathlib.Path, radio: RadioDouble, clock: ManualClock, audit: RecordingAudit
) -> Iterator[ProvisioningService]:
    config = make_config(tmp_path, lan_max_failed_attempts=3, lan_lockout_seconds=60)
    built = build_service(config, radio, audit=audit, clock=clock)
    built.start()
    try:
        yield built
    finally:
        built.stop()


def client_for(service: ProvisioningService) -> LanClient:
    assert service.lan is not None
    return LanClient(f"http://127.0.0.1:{service.lan.port}", sleep=lambda _: time.sleep(0.02))


def code_of(service: ProvisioningService) -> str:
    return service.binding.verification_code


def wrong_code(service: ProvisioningService) -> str:
    return "40719382" if code_of(service) != "40719382" else "50719382"


def raw_post(
    service: ProvisioningService, route: str, body: bytes
) -> tuple[int, dict[str, object]]:
    assert service.lan is not None
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.lan.port}/provision/v1/{route}", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_full_pake_flow_provisions_and_closes_window(
    service: ProvisioningService, radio: RadioDouble, audit: RecordingAudit
) -> None:
    client = client_for(service)
    info = client.info()
    assert info["serial_number"] == service.binding.serial_number
    assert info["window"] == "open"
    assert [n["ssid"] for n in client.networks()] == ["Home", "Cafe"]
    pake = client.authenticate(code_of(service), service.binding.serial_number)
    progress: list[str] = []
    status = client.provision(pake, WifiCredentials("Home", PASSPHRASE), progress=progress.append)
    assert status["state"] == "connected"
    assert status["ip_address"] == DOUBLE_ADDRESS
    assert radio.connect_calls == [WifiCredentials("Home", PASSPHRASE)]
    saved = service.store.credentials_path
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    # The network is remembered; its key stays with the Wi-Fi backend alone.
    assert service.store.load_credentials() == WifiCredentials("Home")
    assert PASSPHRASE.encode() not in saved.read_bytes() and b"Home" not in saved.read_bytes()
    assert service.provisioned
    assert client.info()["window"] == "succeeded"
    with pytest.raises(WindowClosedError):
        client.authenticate(code_of(service), service.binding.serial_number)
    assert ("provisioning.wifi", {"channel": "lan", "outcome": "connected"}) in [
        (k, d) for k, d, _ in audit.records
    ]


def open_session(service: ProvisioningService, code: str) -> tuple[InstallerPake, bytes]:
    """SPAKE2 by hand; returns the installer side and the confirm request as sent."""
    pake = InstallerPake(code, service.binding.serial_number)
    status, reply = raw_post(
        service, "pake", json.dumps({"pake": b64encode(pake.start())}).encode()
    )
    assert status == 200
    confirm = pake.finish(str(reply["session"]), base64.b64decode(str(reply["pake"])))
    body = json.dumps({"session": reply["session"], "confirm": b64encode(confirm)}).encode()
    return pake, body


def test_wrong_code_fails_without_revealing_anything(service: ProvisioningService) -> None:
    _, confirm_request = open_session(service, wrong_code(service))
    assert raw_post(service, "confirm", confirm_request) == (403, {"error": "verification failed"})
    # the session is gone: one guess per session
    assert raw_post(service, "confirm", confirm_request)[0] == 404


def test_wrong_codes_count_toward_lockout_then_backoff_doubles(
    service: ProvisioningService, clock: ManualClock
) -> None:
    client = client_for(service)
    serial = service.binding.serial_number
    for _ in range(3):
        with pytest.raises(VerificationError):
            client.authenticate(wrong_code(service), serial)
    with pytest.raises(LockedOutError) as locked:
        client.authenticate(code_of(service), serial)  # even the right code waits
    assert 55 <= locked.value.retry_after <= 61
    clock.advance(61)
    for _ in range(3):
        with pytest.raises(VerificationError):
            client.authenticate(wrong_code(service), serial)
    clock.advance(61)
    with pytest.raises(LockedOutError):  # second lockout lasts 120 s
        client.authenticate(code_of(service), serial)
    clock.advance(60)
    client.authenticate(code_of(service), serial)


def test_window_closes_after_timeout(service: ProvisioningService, clock: ManualClock) -> None:
    client = client_for(service)
    clock.advance(601)
    assert client.info()["window"] == "timed_out"
    with pytest.raises(WindowClosedError):
        client.authenticate(code_of(service), service.binding.serial_number)
    with pytest.raises(WindowClosedError):
        client.networks()
    service.tick(clock.advance(STATUS_GRACE_SECONDS))
    assert service.lan is None


def test_replayed_confirm_and_credentials_are_rejected(
    service: ProvisioningService, radio: RadioDouble
) -> None:
    pake, confirm_request = open_session(service, code_of(service))
    status, reply = raw_post(service, "confirm", confirm_request)
    assert status == 200
    pake.verify_device(base64.b64decode(str(reply["confirm"])))
    assert raw_post(service, "confirm", confirm_request)[0] == 403

    radio.forced = ConnectOutcome.WRONG_KEY
    sealed = b64encode(pake.seal_credentials(WifiCredentials("Home", PASSPHRASE), 5))
    creds_body = json.dumps({"session": pake.session_id, "seq": 5, "sealed": sealed}).encode()
    assert raw_post(service, "credentials", creds_body)[0] == 202
    wait_for(lambda: len(radio.connect_calls) == 1)
    assert raw_post(service, "credentials", creds_body)[0] == 403
    # the same ciphertext under a new sequence number does not authenticate
    moved = json.dumps({"session": pake.session_id, "seq": 6, "sealed": sealed}).encode()
    assert raw_post(service, "credentials", moved)[0] == 403
    # nor in another session
    other = client_for(service).authenticate(code_of(service), service.binding.serial_number)
    elsewhere = json.dumps({"session": other.session_id, "seq": 5, "sealed": sealed}).encode()
    assert raw_post(service, "credentials", elsewhere)[0] == 403
    # Sentinel: genuine credentials sent after the replays go through the same single
    # connect worker; once they reach the radio, a replay let through would have too.
    genuine = b64encode(other.seal_credentials(WifiCredentials("Cafe"), 6))
    sentinel = json.dumps({"session": other.session_id, "seq": 6, "sealed": genuine}).encode()
    assert raw_post(service, "credentials", sentinel)[0] == 202
    wait_for(lambda: len(radio.connect_calls) >= 2)
    assert radio.connect_calls == [WifiCredentials("Home", PASSPHRASE), WifiCredentials("Cafe")]


def test_replayed_or_forged_status_request_is_rejected(service: ProvisioningService) -> None:
    client = client_for(service)
    pake = client.authenticate(code_of(service), service.binding.serial_number)
    tag = b64encode(pake.status_request_tag(1))
    body = json.dumps({"session": pake.session_id, "seq": 1, "tag": tag}).encode()
    status, reply = raw_post(service, "status", body)
    assert status == 200
    assert pake.open_status(base64.b64decode(str(reply["sealed"])), 1)["state"] == "confirmed"
    assert raw_post(service, "status", body)[0] == 403
    forged = json.dumps({"session": pake.session_id, "seq": 99, "tag": tag}).encode()
    assert raw_post(service, "status", forged)[0] == 403
    # the forged poll did not advance the sequence: the installer's next poll still works
    good = {"session": pake.session_id, "seq": 2, "tag": b64encode(pake.status_request_tag(2))}
    assert raw_post(service, "status", json.dumps(good).encode())[0] == 200


def test_wrong_wifi_key_saves_nothing_and_allows_retry(
    service: ProvisioningService, radio: RadioDouble
) -> None:
    client = client_for(service)
    pake = client.authenticate(code_of(service), service.binding.serial_number)
    with pytest.raises(Exception, match="could not join"):
        client.provision(pake, WifiCredentials("Home", "not-the-passphrase"))
    assert not service.store.has_credentials()
    assert client.info()["window"] == "open"
    status = client.provision(pake, WifiCredentials("Home", PASSPHRASE))
    assert status["state"] == "connected"
    assert service.store.has_credentials()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"x" * 5000, 413),
        (b"{not json", 400),
        (b'{"pake": "!!!"}', 400),
        (b'{"pake": "AAAA"}', 400),
        (b"[1]", 400),
    ],
)
def test_hostile_request_bodies_are_rejected(
    service: ProvisioningService, body: bytes, code: int
) -> None:
    assert raw_post(service, "pake", body)[0] == code


@pytest.mark.parametrize("seq", [-1, 0, 2**64, True, "1"])
def test_out_of_range_sequence_numbers_are_rejected(
    service: ProvisioningService, seq: object
) -> None:
    pake = client_for(service).authenticate(code_of(service), service.binding.serial_number)
    sealed = b64encode(pake.seal_credentials(WifiCredentials("Home", PASSPHRASE), 1))
    body = json.dumps({"session": pake.session_id, "seq": seq, "sealed": sealed}).encode()
    assert raw_post(service, "credentials", body)[0] == 400
    tag = b64encode(b"x" * 32)
    body = json.dumps({"session": pake.session_id, "seq": seq, "tag": tag}).encode()
    assert raw_post(service, "status", body)[0] == 400


def test_unknown_session_is_not_found(service: ProvisioningService) -> None:
    body = json.dumps({"session": "nope", "confirm": b64encode(b"x" * 32)}).encode()
    assert raw_post(service, "confirm", body)[0] == 404


def test_planted_passphrase_never_logged(
    service: ProvisioningService, audit: RecordingAudit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(service)
    pake = client.authenticate(code_of(service), service.binding.serial_number)
    with pytest.raises(Exception, match="could not join"):
        client.provision(pake, WifiCredentials("Home", PASSPHRASE[::-1] + "x"))
    client.provision(pake, WifiCredentials("Home", PASSPHRASE))
    assert service.provisioned
    logged = "\n".join(
        [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    )
    assert caplog.records, "the flow should have logged something"
    for secret in (PASSPHRASE, PASSPHRASE[::-1] + "x", code_of(service)):
        assert secret not in logged
        assert secret not in repr(audit.records)


def test_pake_rejects_malformed_peer_messages() -> None:
    pake = InstallerPake("40719382", "EA-1")
    pake.start()
    with pytest.raises(DecodeError):
        pake.finish("s", b"\x00" * 33)
    with pytest.raises(DecodeError):
        pake.finish("s", b"\x00" * 10)
    device = DevicePake("40719382", "EA-1", "s")
    confirmed = InstallerPake("40719382", "EA-1")
    confirmed.finish("s", device.respond(confirmed.start()))
    with pytest.raises(TooLargeError):
        confirmed.open_status(b"\x00" * 5000, 1)
    with pytest.raises(VerificationError):
        confirmed.open_status(b"\x00" * 100, 1)
    with pytest.raises(VerificationError):  # credentials before confirmation
        device.open_credentials(confirmed.seal_credentials(WifiCredentials("Home"), 1), 1)


def test_credentials_deeply_nested_json_is_rejected() -> None:
    from agent.provisioning.pake import decode_credentials

    with pytest.raises(DecodeError):
        decode_credentials(b"[" * 100_000)


@pytest.mark.parametrize(
    "body",
    [
        b'{"ssid": "\\ud800", "passphrase": null, "hidden": false}',
        b'{"ssid": "\xed\xa0\x80", "passphrase": null, "hidden": false}',
        b'{"ssid": "net", "passphrase": "\\udcff\\udcfe", "hidden": false}',
    ],
)
def test_credentials_lone_surrogate_is_rejected(body: bytes) -> None:
    from agent.provisioning.pake import decode_credentials

    with pytest.raises(DecodeError):
        decode_credentials(body)



def test_pake_point_not_on_curve_is_rejected() -> None:
    # Pre-authentication input: spake2 raises its own NotOnCurve for this point.
    device = DevicePake("40719382", "EA-1", "s")
    with pytest.raises(DecodeError):
        device.respond(b"A" + bytes(31) + b"\x01")
