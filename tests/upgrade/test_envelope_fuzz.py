"""Hostile envelopes: the decoder only ever raises BadDataError subclasses, and caps bite."""

from __future__ import annotations

import contextlib
import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import BadDataError, DecodeError, TooLargeError
from agent.upgrade import cborguard
from agent.upgrade.builder import ManifestSpec, build_manifest, public_key_of, sign_envelope
from agent.upgrade.envelope import verify_envelope
from agent.upgrade.keys import KeySet
from agent.upgrade.settings import SignatureAlgorithm
from tests.upgrade.conftest import CLASS_ID, VENDOR_ID

KEY = ed25519.Ed25519PrivateKey.generate()
KEYS = KeySet.from_keys([public_key_of(KEY)], list(SignatureAlgorithm))
VALID = sign_envelope(
    build_manifest(
        ManifestSpec(
            sequence=7,
            vendor_id=VENDOR_ID,
            class_id=CLASS_ID,
            image_digest=hashlib.sha256(b"x").digest(),
            image_size=1,
            uri="http://127.0.0.1/x",
            expires_at=2_000_000_000,
        )
    ),
    [KEY],
)


def _verify_only_bad_data(data: bytes) -> None:
    with contextlib.suppress(BadDataError):
        verify_envelope(data, KEYS)


def test_valid_envelope_verifies() -> None:
    assert verify_envelope(VALID, KEYS).manifest.sequence == 7


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_bad_data(data: bytes) -> None:
    _verify_only_bad_data(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_envelopes_raise_only_bad_data(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    _verify_only_bad_data(bytes(raw[:cut]))


_cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.floats(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-300, 30) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_cbor_values, _cbor_values)
def test_structured_garbage_in_envelope_slots_raises_only_bad_data(a: object, b: object) -> None:
    _verify_only_bad_data(cbor2.dumps(cbor2.CBORTag(107, {2: cbor2.dumps(a), 3: cbor2.dumps(b)})))
    _verify_only_bad_data(cbor2.dumps(cbor2.CBORTag(107, {2: a, 3: b})))


def test_deep_nesting_bomb_is_rejected() -> None:
    bomb = b"\x81" * 10_000 + b"\x00"
    with pytest.raises(TooLargeError, match="nesting"):
        verify_envelope(bomb, KEYS)


def test_huge_length_header_is_rejected_without_allocating() -> None:
    claim = b"\xd8\x6b\xa1\x03\x5b" + (2**62).to_bytes(8, "big") + b"\x00"
    with pytest.raises(DecodeError, match="longer than the remaining"):
        verify_envelope(claim, KEYS)


def test_oversized_envelope_is_rejected_before_decoding() -> None:
    with pytest.raises(TooLargeError):
        verify_envelope(b"\x00" * (64 * 1024 + 1), KEYS)


def test_indefinite_length_items_are_rejected() -> None:
    with pytest.raises(DecodeError, match="indefinite"):
        cborguard.loads(b"\x9f\x01\xff", max_bytes=100)


def test_item_count_bomb_is_rejected() -> None:
    with pytest.raises(TooLargeError):
        cborguard.loads(b"\x9a\x00\x10\x00\x00" + b"\x00" * 10, max_bytes=100)


def test_disallowed_tag_is_rejected() -> None:
    with pytest.raises(DecodeError, match="tag 1 "):
        verify_envelope(cbor2.dumps(cbor2.CBORTag(1, 5)), KEYS)


def test_trailing_bytes_after_envelope_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        verify_envelope(VALID + b"\x00", KEYS)


_commands = st.lists(st.integers(-5, 40) | _cbor_values, max_size=8)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.integers(-300, 30), _cbor_values, max_size=6),
    _commands,
    st.dictionaries(st.integers(-3, 25), _cbor_values, max_size=4),
)
def test_hostile_signed_manifest_contents_raise_only_bad_data(
    manifest: dict[int, object], commands: list[object], parameters: dict[int, object]
) -> None:
    """A compromised signer still cannot crash the interpreter: fuzz below the signature."""
    from agent.upgrade.manifest import parse_manifest

    shared = cbor2.dumps([20, parameters, *commands])
    body = {1: 1, 2: 3, 3: cbor2.dumps({2: [[b"\x00"]], 4: shared}), **manifest}
    with contextlib.suppress(BadDataError):
        parse_manifest(cbor2.dumps(body))
    with contextlib.suppress(BadDataError):
        verify_envelope(sign_envelope(cbor2.dumps(body), [KEY]), KEYS)
