"""The spliced event encoding is byte for byte the canonical one, in CBOR and in JSON (issue 12).

``agent.eventbody`` encodes an event once in pieces and splices ``seq`` and
``img`` in; consumers must not notice.  Every form is checked against the
slow path it replaced: the whole map through ``cbor2``'s canonical mode, and
``jsonform.cbor_to_json`` of those bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import cbor, jsonform
from agent.eventbody import encode_body, ordered
from agent.events import Event, SchemaCatalogue, schema
from agent.minimise import Minimiser, Pseudonymiser
from agent.purposes import Purpose

EDGE_FLOATS = [
    0.0, -0.0, 1.5, -2.0, 0.1, 65504.0, 65520.0, 6.103515625e-05, 5.960464477539063e-08,
    2.0**-149, 2.0**-24, 2.0**-25, 3.4028234663852886e38, 1e300, -1e-300,
    math.inf, -math.inf, math.nan,
]

keys = st.text(st.sampled_from("abfvzAZ_-.é€😀\x00"), max_size=30)
floats = st.one_of(
    st.sampled_from(EDGE_FLOATS),
    st.floats(width=16),
    st.floats(width=32),
    st.floats(),
    st.integers(0, 2**64 - 1).map(lambda n: struct.unpack(">d", n.to_bytes(8, "big"))[0]),
)
scalars = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.integers(-30, 30),
    floats,
    keys,
    st.binary(max_size=40),
    st.sampled_from([True, False, None]),
)
pseudonyms = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"), min_size=1, max_size=26)


def slow_map(
    fields: dict[str, Any], ids: dict[str, str], dev: str | None, image: bytes | None,
    seq: int | None, *, dropped: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1, "type": "motion", "purpose": "cloud_events", "ts": 1_800_000_000,
        "f": fields, "id": "6f1c0f6e-8a7e-4c56-9a55-2d9c4b7fbb1e",
    }
    if ids:
        body["ids"] = ids
    if dev is not None:
        body["dev"] = dev
    if image is not None:
        body["img"] = image
    if seq is not None:
        body["seq"] = seq
    if dropped:
        body["img_dropped"] = True
    return body


@settings(max_examples=400, deadline=None)
@given(
    fields=st.dictionaries(keys, scalars, max_size=30),
    ids=st.dictionaries(keys, pseudonyms, max_size=4),
    dev=st.none() | pseudonyms,
    image=st.none() | st.binary(max_size=300),
    seq=st.none() | st.integers(0, 2**63),
    dropped=st.booleans(),
)
def test_spliced_cbor_and_json_equal_the_slow_path(
    fields: dict[str, Any], ids: dict[str, str], dev: str | None, image: bytes | None,
    seq: int | None, dropped: bool,
) -> None:
    body = encode_body(
        fields=fields, version=1, msg_id="6f1c0f6e-8a7e-4c56-9a55-2d9c4b7fbb1e",
        ts=1_800_000_000, dev=dev, ids=ids, image=image, event_type="motion",
        purpose="cloud_events", image_dropped=dropped,
    )
    assert body is not None
    for with_image in (True, False):
        kept = image if with_image else None
        expected = cbor.dumps(slow_map(fields, ids, dev, kept, seq, dropped=dropped))
        assert body.cbor(seq, with_image=with_image) == expected
        assert body.json(seq, with_image=with_image) == jsonform.cbor_to_json(expected)


def test_fields_that_are_not_scalars_take_the_whole_map_path() -> None:
    for fields in ({"box": [1, 2]}, {"box": {"x": 1}}, {1: "a"}, {"n": 2**64}, {"s": {1, 2}}):
        assert encode_body(
            fields=fields, version=1, msg_id="m", ts=0, dev=None, ids={}, image=None,  # type: ignore[arg-type]
            event_type="motion", purpose="cloud_events",
        ) is None


def test_canonical_key_order_is_by_encoded_length_then_bytes() -> None:
    mapping = {"bb": 1, "a": 2, "é": 3, "c": 4, "aa": 5, "\x00": 6}
    assert list(ordered(mapping) or {}) == [k for k in cbor2.loads(cbor.dumps(mapping))]
    assert ordered({1: "x"}) is None


def minimiser(snapshots: bool = True, max_event_bytes: int = 256 * 1024) -> Minimiser:
    schemas = SchemaCatalogue([
        schema("motion", Purpose.CLOUD_EVENTS, ("camera", "area", "duration", "box"),
               ("person",), image=True),
        schema("device.status", Purpose.DEVICE_OPERATION, ("state",)),
    ])
    return Minimiser(
        device_id="serial-1", schemas=schemas,
        is_granted=lambda p: snapshots or p is not Purpose.EVENT_SNAPSHOTS,
        pseudonymiser=Pseudonymiser(b"k" * 32, lambda p: 0), max_event_bytes=max_event_bytes,
    )


def test_the_minimiser_payload_is_the_canonical_map_it_stands_for() -> None:
    event = Event("motion", 1_800_000_000.7, {"camera": "cam0", "area": 3, "duration": 1.5,
                                              "secret": "x"}, {"person": "alice"}, b"\xff\xd8J")
    message = minimiser().minimise(event)
    assert message is not None and message.encoded is not None
    body = cbor2.loads(message.payload)
    assert body["f"] == {"camera": "cam0", "area": 3, "duration": 1.5}
    assert body["img"] == b"\xff\xd8J" and "dev" in body and "person" in body["ids"]
    assert message.payload == cbor.dumps(body)
    # A list in the fields: the whole-map path, same canonical bytes.
    listed = minimiser().minimise(Event("motion", 1.0, {"box": [1, 2.5], "area": 1}))
    assert listed is not None and listed.encoded is None and listed.body is not None
    assert listed.payload == cbor.dumps(cbor2.loads(listed.payload))
    # No device pseudonym on device-operation events, as before.
    status = minimiser().minimise(Event("device.status", 1.0, {"state": "started"}))
    assert status is not None and "dev" not in cbor2.loads(status.payload)


def test_an_oversized_picture_is_dropped_and_said_so() -> None:
    event = Event("motion", 1.0, {"area": 1}, image=b"\xff" * 5000)
    message = minimiser(max_event_bytes=1000).minimise(event)
    assert message is not None and not message.has_image
    body = cbor2.loads(message.payload)
    assert body["img_dropped"] is True and "img" not in body
    assert message.payload == cbor.dumps(body)
    assert minimiser(snapshots=False).minimise(event).has_image is False  # type: ignore[union-attr]
