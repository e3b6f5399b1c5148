"""Events as JSON or CBOR; commands in either, from MQTT v5 and v3.1.1 clients (issue 13)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import jsonform
from agent.auth.envelope import json_carriage
from agent.auth.principals import key_id
from agent.commands import decode_request, is_json
from agent.config import PayloadFormat
from agent.errors import DecodeError
from agent.purposes import Purpose
from drivers.auth.client import CommandClient, generate_key, public_key_raw
from tests.support.agent_harness import RunningAgent, make_config, motion
from tests.support.broker import Broker
from tests.support.mqtt import Collector, V311Requester
from tests.support.owner import Signer

HOSTILE = [
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, "nested deeper"),
    (b'{"x": 1' + b"0" * 5000 + b"}", "beyond 64 bits"),
    (b'{"x": 18446744073709551616}', "beyond 64 bits"),
    (b'{"x": 1e999}', "out of range"),
    (b'{"x": NaN}', "not a number JSON allows"),
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b'{"a": "\xff\xfe"}', "not UTF-8"),
    (b'{"a": "\\ud800"}', "lone surrogate"),
    (b"{", "invalid JSON"),
    (b'{"cose": "not base64!"}', "not valid base64"),
    (b'{"cose": "oA==", "extra": 1}', "carries only"),
    (b'{"response_topic": 5}', "must be text"),
    (b"[1, 2]", "is an object"),
]


# --- the pure parts --------------------------------------------------------------------


def test_cbor_to_json_maps_bytes_to_base64_and_numbers_to_numbers() -> None:
    body = {"v": 1, "ts": 1_800_000_000, "f": {"area": 0.25, "n": -3}, "img": b"\xff\xd8JP"}
    out = json.loads(jsonform.cbor_to_json(cbor2.dumps(body)))
    assert out == {"v": 1, "ts": 1_800_000_000, "f": {"area": 0.25, "n": -3}, "img": "/9hKUA=="}
    assert base64.b64decode(out["img"]) == b"\xff\xd8JP"
    odd = json.loads(jsonform.cbor_to_json(cbor2.dumps({1: float("nan"), b"k": [b"\x00"]})))
    assert odd == {"1": None, '"aw=="': ["AA=="]}
    with pytest.raises(DecodeError):
        jsonform.cbor_to_json(b"\xff\x00")


@pytest.mark.parametrize(("payload", "why"), HOSTILE)
def test_hostile_json_is_refused_with_a_clear_reason(payload: bytes, why: str) -> None:
    request = decode_request(payload, "application/json", max_bytes=64 * 1024)
    assert request.json and request.error is not None and why in request.error, request


def test_format_by_content_type_or_first_byte() -> None:
    assert is_json(b"{}", None) and is_json(b" \n{}", None)
    assert is_json(b"\xa0", "application/json; charset=utf-8")
    assert not is_json(b"{}", "application/cbor")
    assert not is_json(b"\xa0", None) and not is_json(b"", None)
    assert decode_request(b"\xa0", None, max_bytes=100).body == b"\xa0"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_no_bytes_make_the_json_reader_raise_anything_but_a_clean_request(data: bytes) -> None:
    request = decode_request(b"{" + data, None, max_bytes=4096)
    assert request.json
    assert request.error is not None or isinstance(cbor2.loads(request.body), dict)
    direct = decode_request(data, "application/json", max_bytes=4096)
    assert direct.error is None or direct.error.startswith(("invalid JSON", "a JSON", "JSON of"))


# --- against a real broker and the real agent ------------------------------------------


def _agent_with_owner(
    tmp_path: Path, broker: Broker, **mqtt: object
) -> tuple[RunningAgent, str, Signer]:
    state = tmp_path / "state"
    state.mkdir()
    signer = Signer()
    device = signer.enrol_in_state(state)
    running = RunningAgent(make_config(state, broker.port, **mqtt))
    return running, f"edge/{device}", signer


def _wait_connected(running: RunningAgent) -> None:
    deadline = time.monotonic() + 15
    while not (running.agent.link and running.agent.link.connected):
        assert time.monotonic() < deadline, "agent never connected"
        time.sleep(0.05)


def test_events_are_json_with_their_content_type_by_default(broker: Broker, tmp_path: Path) -> None:
    running, base, _ = _agent_with_owner(tmp_path, broker)
    sub = Collector(broker.host, broker.port, f"{base}/events/#")
    try:
        now = time.time()
        running.agent.ledger.grant(Purpose.CLOUD_EVENTS, now)
        running.agent.ledger.grant(Purpose.EVENT_SNAPSHOTS, now)
        running.agent.emit(motion(7))
        assert sub.wait_for(lambda c: any(m.topic.endswith("/motion") for m in c.messages), 20)
    finally:
        running.stop()
        sub.close()
    message = next(m for m in sub.messages if m.topic.endswith("/events/motion"))
    assert message.properties.ContentType == "application/json"
    body = json.loads(message.payload)  # what Node-RED's json datatype does
    assert body["type"] == "motion" and body["f"]["area"] == 7
    assert base64.b64decode(body["img"]) == b"\xff\xd8JPEG-BYTES"
    assert dict(message.properties.UserProperty)["msg_id"] == body["id"]


def test_cbor_mode_still_publishes_cbor(broker: Broker, tmp_path: Path) -> None:
    running, base, signer = _agent_with_owner(tmp_path, broker, payload_format=PayloadFormat.CBOR)
    sub = Collector(broker.host, broker.port, f"{base}/events/#")
    try:
        running.agent.ledger.grant(Purpose.CLOUD_EVENTS, time.time())
        running.agent.emit(motion(3))
        assert sub.wait_for(lambda c: any(m.topic.endswith("/motion") for m in c.messages), 20)
        # A CBOR command still gets a CBOR reply in CBOR mode.
        answer = sub.request(f"{base}/cmd/consent.get", {}, signer=signer)
        assert answer["ok"] and sub.last_raw_reply[:1] != b"{"
    finally:
        running.stop()
        sub.close()
    message = next(m for m in sub.messages if m.topic.endswith("/events/motion"))
    assert message.properties.ContentType == "application/cbor"
    assert cbor2.loads(message.payload)["f"]["area"] == 3


def test_a_v311_client_sends_json_commands_and_gets_json_replies(
    broker: Broker, tmp_path: Path
) -> None:
    running, base, signer = _agent_with_owner(tmp_path, broker)
    client = V311Requester(broker.host, broker.port)
    device = base.rsplit("/", 1)[1]
    try:
        _wait_connected(running)
        # Public: a bare {} with a reply topic in the JSON, the correlation echoed.
        reply_topic = f"{base}/reply/nodered-{uuid.uuid4().hex[:6]}"
        status = client.request(
            f"{base}/cmd/status",
            json.dumps({"response_topic": reply_topic, "correlation_id": "r1"}).encode(),
            reply_topic,
        )
        assert status["ok"] and status["result"]["device"] == device
        assert status["correlation_id"] == "r1"
        # Signed: the COSE_Sign1 bytes carried in base64; the signature covers them.
        signed = signer.sign(device, "consent.set", {"purpose": "cloud_events", "granted": True})
        reply_topic = f"{base}/reply/ha-{uuid.uuid4().hex[:6]}"
        granted = client.request(
            f"{base}/cmd/consent.set",
            json_carriage(signed, response_topic=reply_topic),
            reply_topic,
        )
        assert granted["ok"] and granted["result"]["granted"] is True, granted
        assert running.agent.ledger.is_granted(Purpose.CLOUD_EVENTS)
        # Unsigned JSON for a signed command: refused in JSON, on the default reply topic.
        default = f"{base}/reply/consent.set"
        refused = client.request(f"{base}/cmd/consent.set", b'{"purpose": "x"}', default)
        assert refused["error"]["code"] == "unauthorized"
        # A reply topic outside the device's namespace: refused, nothing runs.
        foreign = client.request(
            f"{base}/cmd/status", b'{"response_topic": "elsewhere/x"}', f"{base}/reply/status"
        )
        assert foreign["error"]["code"] == "forbidden"
    finally:
        client.close()
        running.stop()


def test_hostile_json_commands_are_answered_and_the_loop_survives(
    broker: Broker, tmp_path: Path
) -> None:
    running, base, _ = _agent_with_owner(tmp_path, broker)
    client = V311Requester(broker.host, broker.port)
    try:
        _wait_connected(running)
        for payload, why in HOSTILE:
            answer = client.request(f"{base}/cmd/status", payload, f"{base}/reply/status")
            assert answer["ok"] is False and answer["error"]["code"] == "bad_request", payload
            assert why in answer["error"]["message"]
        alive = client.request(f"{base}/cmd/status", b"{}", f"{base}/reply/status")
        assert alive["ok"] is True
        assert running.thread.is_alive()
    finally:
        client.close()
        running.stop()


def test_a_v5_client_sends_json_and_hears_json_with_its_correlation(
    broker: Broker, tmp_path: Path
) -> None:
    running, base, signer = _agent_with_owner(tmp_path, broker)
    sub = Collector(broker.host, broker.port, f"{base}/status")
    device = base.rsplit("/", 1)[1]
    try:
        _wait_connected(running)
        raw = json_carriage(signer.sign(device, "consent.get", {}))
        answer: Any = sub.request(f"{base}/cmd/consent.get", None, raw=raw)
        assert answer["ok"] and "consent" in answer["result"]
        assert json.loads(sub.last_raw_reply) == answer
    finally:
        sub.close()
        running.stop()


def test_the_command_client_speaks_json_and_opens_a_sealed_json_reply(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    key = generate_key()
    signer = Signer()
    signer.private_key = key
    signer.public_key = public_key_raw(key)
    signer.kid = key_id(signer.public_key)
    device = signer.enrol_in_state(state)
    running = RunningAgent(make_config(state, broker.port))
    seen = Collector(broker.host, broker.port, f"edge/{device}/reply/#")
    client = CommandClient(
        broker.host, broker.port, device_id=device, signing_key=key, tls=None,
        payload_format="json",
    )  # fmt: skip
    try:
        _wait_connected(running)
        with client:
            granted = client.call("consent.set", {"purpose": "cloud_events", "granted": True})
            assert granted["granted"] is True
            assert client.call("status")["device"] == device
            export = client.call("data.export", {"format": "json"})  # sealed, base64 in JSON
            assert "consent" in json.dumps(export, default=str)
        assert seen.wait_for(lambda c: len(c.messages) >= 3)
        assert all(m.properties.ContentType == "application/json" for m in seen.messages)
        assert all(json.loads(m.payload)["ok"] for m in seen.messages)
        sealed = json.loads(seen.messages[-1].payload)["sealed"]
        assert isinstance(sealed, str) and base64.b64decode(sealed)
    finally:
        seen.close()
        running.stop()


def test_retained_tombstones_follow_the_payload_format(broker: Broker, tmp_path: Path) -> None:
    running, base, signer = _agent_with_owner(tmp_path, broker)
    sub = Collector(broker.host, broker.port, f"{base}/tombstones/#")
    try:
        _wait_connected(running)
        for granted in (True, False):
            args = {"purpose": "face_recognition", "granted": granted}
            assert sub.request(f"{base}/cmd/consent.set", args, signer=signer)["ok"]
        assert sub.wait_for(lambda c: any("/tombstones/" in t for t in c.topics()))
    finally:
        sub.close()
        running.stop()
    retained = next(m for m in sub.messages if m.topic.endswith("/tombstones/face_recognition"))
    body = json.loads(retained.payload)
    assert body["type"] == "privacy.tombstone" and body["id"] == body["f"]["notice"]
