"""The client library against a real mosquitto and the real agent (in-process)."""

from __future__ import annotations

import itertools
import time

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from agent.auth import cose
from agent.auth.roles import Role
from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceTimeoutError,
    PolicyError,
    VerificationError,
)
from agent.purposes import Purpose
from drivers.auth.client import (
    CommandClient,
    CommandRefusedError,
    generate_key,
    key_id_hex,
    public_key_raw,
)
from tests.auth.conftest import Device
from tests.support.broker import free_port
from tests.support.mqtt import Collector


def test_owner_sets_and_reads_consent_then_grants_and_revokes_a_technician(
    device: Device,
) -> None:
    ledger = device.running.agent.ledger
    technician = generate_key()
    with device.client() as owner:
        result = owner.call("consent.set", {"purpose": "cloud_events", "granted": True})
        assert result["granted"] is True and result["changed"] is True
        assert ledger.is_granted(Purpose.CLOUD_EVENTS)
        consent = owner.call("consent.get")["consent"]
        assert isinstance(consent, dict)
        assert consent["cloud_events"] is True and consent["face_recognition"] is False
        # The ledger records who gave it: the owner's key, not "mqtt" in general.
        history = ledger.history()[-1]
        assert f"owner:{key_id_hex(device.owner)[:16]}" in str(history["source"])

        granted = owner.call(
            "auth.grant",
            {"role": "technician", "public_key": public_key_raw(technician), "label": "tech"},
        )
        assert granted["role"] == "technician" and granted["kid"] == key_id_hex(technician)
        listed = owner.call("auth.list")["principals"]
        assert isinstance(listed, list)
        assert {(p["role"], p["kid"]) for p in listed} == {
            ("owner", key_id_hex(device.owner)),
            ("technician", key_id_hex(technician)),
        }

        with device.client(technician) as tech:
            # Trusted, but a technician may not touch consent: refused by role, nothing changes.
            with pytest.raises(CommandRefusedError) as refused:
                tech.call("consent.set", {"purpose": "cloud_events", "granted": False})
            assert refused.value.code == "unauthorized"
            assert "role technician may not" in refused.value.message
            assert ledger.is_granted(Purpose.CLOUD_EVENTS)
            assert tech.call("status")["bound"] is True  # public: answered unsigned

            assert owner.call("auth.revoke", {"kid": key_id_hex(technician)}) == {
                "revoked": key_id_hex(technician)
            }
            with pytest.raises(CommandRefusedError, match="not trusted"):
                tech.call("consent.get")
    principals = device.running.agent.composition.principals.principals()
    assert [p.role for p in principals] == [Role.OWNER]


def test_an_untrusted_key_gets_one_line_unauthorized_and_changes_nothing(device: Device) -> None:
    with device.client(generate_key()) as stranger, pytest.raises(CommandRefusedError) as refused:
        stranger.call("consent.set", {"purpose": "face_recognition", "granted": True})
    error = refused.value
    assert error.code == "unauthorized" and error.command == "consent.set"
    assert str(error).startswith("consent.set: unauthorized: ") and "\n" not in str(error)
    assert not device.running.agent.ledger.is_granted(Purpose.FACE_RECOGNITION)


def test_counters_rise_strictly_and_a_captured_command_cannot_be_replayed(
    device: Device,
) -> None:
    spy = Collector(device.broker.host, device.broker.port, f"{device.base}/cmd/#")
    try:
        with device.client() as owner:
            counters = [owner.next_counter() for _ in range(1000)]
            assert all(b > a for a, b in itertools.pairwise(counters))
            for granted in (True, False, True):
                owner.call("consent.set", {"purpose": "usage_statistics", "granted": granted})
        assert spy.wait_for(lambda c: len(c.messages) >= 3)
        captured = spy.messages[1].payload  # the withdrawal
        reply = spy.request(f"{device.base}/cmd/consent.set", None, raw=captured)
        assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
        assert "replay" in reply["error"]["message"]
        assert device.running.agent.ledger.is_granted(Purpose.USAGE_STATISTICS)
    finally:
        spy.close()


def test_data_export_is_sealed_to_the_requester_and_opaque_to_another_subscriber(
    device: Device,
) -> None:
    eavesdropper = Collector(device.broker.host, device.broker.port, f"{device.base}/reply/#")
    try:
        with device.client() as owner:
            owner.call("consent.set", {"purpose": "cloud_events", "granted": True})
            export = owner.call("data.export", {"format": "json"})
            # Any other command can ask for the same protection.
            sealed_consent = owner.call("consent.get", sealed=True)
        data = export["data"]
        assert isinstance(data, str) and "edge-agent-personal-data" in data
        assert "mqtt:owner:" in data  # the consent history, personal to the owner
        assert sealed_consent["consent"]["cloud_events"] is True  # type: ignore[index]
        assert eavesdropper.wait_for(lambda c: len(c.messages) >= 3)
        seen = [bytes(m.payload) for m in eavesdropper.messages]
        for marker in (b"edge-agent-personal-data", b"mqtt:owner:", str(export["sha256"]).encode()):
            assert not any(marker in raw for raw in seen), marker
        replies = [cbor2.loads(raw) for raw in seen]
        sealed = [reply["sealed"] for reply in replies if "sealed" in reply]
        # consent.set in clear; the export and the sealed consent.get only as ciphertext.
        assert len(sealed) == 2 and sum("result" in reply for reply in replies) == 1
        # The eavesdropper's own key opens nothing: only the requester's one-time key did.
        with pytest.raises(VerificationError):
            cose.open_sealed(x25519.X25519PrivateKey.generate(), sealed[0], max_bytes=1 << 24)
    finally:
        eavesdropper.close()


def test_data_export_without_a_reply_key_is_refused_by_the_device(device: Device) -> None:
    # What a client that forgot to seal would get: the device never answers in clear.
    with device.client() as owner:
        payload = owner._exchange(  # the raw exchange, bypassing call()'s automatic sealing
            "data.export",
            _signed(owner, "data.export", {"format": "json"}),
            10.0,
        )
    reply = cbor2.loads(payload)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert "reply_key" in reply["error"]["message"] and "data" not in reply


def _signed(client: CommandClient, name: str, args: dict[str, object]) -> bytes:
    from agent.auth.envelope import sign_command

    return sign_command(
        client._key, client.device_id, name, args, counter=client.next_counter(), now=time.time()
    )


def test_a_wrong_device_id_times_out_with_a_clear_transport_error(device: Device) -> None:
    client = CommandClient(
        device.broker.host,
        device.broker.port,
        device_id="d0000000000000000",
        signing_key=device.owner,
        tls=None,
    )
    with client, pytest.raises(DeviceTimeoutError, match="no reply from device d0000"):
        client.call("consent.get", timeout=1.0)


def test_an_unreachable_broker_is_a_transport_error() -> None:
    port = free_port()  # nothing listens there
    client = CommandClient(
        "127.0.0.1", port, device_id="d1", signing_key=generate_key(), tls=None
    )
    with pytest.raises(ConnectionLostError, match=f"127.0.0.1:{port}"):
        client.connect()


def test_plaintext_to_a_remote_broker_and_bad_names_are_refused_before_any_traffic() -> None:
    with pytest.raises(PolicyError, match="clear text"):
        CommandClient("broker.example.com", 1883, device_id="d1", signing_key=generate_key(),
                      tls=None)
    for bad in ("d1/cmd", "d+", "#", ""):
        with pytest.raises(DecodeError):
            CommandClient("127.0.0.1", 1883, device_id=bad, signing_key=generate_key(), tls=None)
    client = CommandClient("127.0.0.1", 1883, device_id="d1", signing_key=generate_key(),
                           tls=None)
    for name in ("consent/set", "Consent.set", "cmd/#"):
        with pytest.raises(DecodeError):
            client.call(name)
    with pytest.raises(DecodeError, match="reply_key"):
        client.call("consent.get", {"reply_key": b"\x00" * 32})
