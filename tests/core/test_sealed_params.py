"""Sealed parameters (agent.sealedparams): the device's key, the format, hostile blobs.

Real files under a temporary state directory (the device key and the wrapped
sealing key), real ``cryptography``; the end-to-end side (the real agent, a
real broker, an eavesdropper on ``#``) is tests/privacy/test_sealed_credentials.py.
"""

from __future__ import annotations

import dataclasses
import pathlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import cbor
from agent.auth import cose
from agent.errors import BadDataError, DecodeError, DeviceIOError, TooLargeError, VerificationError
from agent.keystore import FileDeviceKey
from agent.layout import StateLayout
from agent.sealedparams import (
    COSE_ENCRYPT0_TAG,
    MAX_SEALED_BYTES,
    SEALED,
    Binding,
    PlaintextSecretError,
    SealingKey,
    open_params,
    parse_sealed,
    seal_params,
    sealing_kid,
    unseal_arguments,
)

BINDING = Binding(
    "d0123456789abcdef", "camera.set_credentials", 1_700_000_000_000_001, 1_700_000_000
)
PASSWORD = "Front-Pass-5512"
SECRET = frozenset({"password"})


def make_key(tmp_path: pathlib.Path) -> SealingKey:
    layout = StateLayout(tmp_path / "state")
    layout.keys_dir.mkdir(parents=True, exist_ok=True)
    return SealingKey(layout.sealing_key, FileDeviceKey(layout.device_key))


@pytest.fixture
def key(tmp_path: pathlib.Path) -> SealingKey:
    return make_key(tmp_path)


def test_round_trip_and_the_key_file_holds_only_the_wrapped_key(
    key: SealingKey, tmp_path: pathlib.Path
) -> None:
    blob = seal_params(key.public_key(), {"password": PASSWORD}, BINDING)
    assert key.open(blob, BINDING) == {"password": PASSWORD}
    assert PASSWORD.encode() not in blob
    stored = key.path.read_bytes()
    (raw_hex,) = key.secrets()
    assert bytes.fromhex(raw_hex) not in stored
    assert key.path.stat().st_mode & 0o777 == 0o600
    # Another process (the CLI) reads the same key, never a new one.
    again = make_key(tmp_path)
    assert again.public_key() == key.public_key()
    assert again.open(blob, BINDING) == {"password": PASSWORD}
    described = key.describe()
    assert described == {"alg": -25, "key": key.public_key(), "kid": key.kid().hex()}


def test_a_damaged_key_file_is_an_error_not_a_new_key(
    key: SealingKey, tmp_path: pathlib.Path
) -> None:
    key.public_key()
    key.path.write_bytes(b"EAK1" + b"\0" * 60)
    with pytest.raises(DeviceIOError, match="damaged"):
        make_key(tmp_path).public_key()
    assert key.path.read_bytes() == b"EAK1" + b"\0" * 60


@pytest.mark.parametrize("field", ["device_id", "command", "counter", "timestamp"])
def test_a_blob_opens_only_for_the_command_it_was_sealed_for(key: SealingKey, field: str) -> None:
    blob = seal_params(key.public_key(), {"password": PASSWORD}, BINDING)
    other = {
        "device_id": "dfedcba9876543210",
        "command": "onvif.set_credentials",
        "counter": BINDING.counter + 1,
        "timestamp": BINDING.timestamp + 1,
    }[field]
    with pytest.raises(VerificationError, match="another command, device or signature"):
        key.open(blob, dataclasses.replace(BINDING, **{field: other}))


def test_a_blob_for_another_key_is_refused(key: SealingKey) -> None:
    stranger = x25519.X25519PrivateKey.generate()
    blob = seal_params(cose.raw_public(stranger.public_key()), {"password": PASSWORD}, BINDING)
    with pytest.raises(VerificationError, match="sealed to another key"):
        key.open(blob, BINDING)
    # The right kid on a blob made for another key: the AEAD still refuses it.
    parts = list(cbor2.loads(blob).value)
    parts[1] = {**parts[1], 4: key.kid()}
    with pytest.raises(VerificationError, match="does not open"):
        key.open(cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, parts)), BINDING)


def test_plaintext_secrets_are_refused_naming_the_sealed_form(key: SealingKey) -> None:
    with pytest.raises(PlaintextSecretError) as info:
        unseal_arguments(
            {"camera": "front", "username": "u", "password": PASSWORD},
            command="camera.set_credentials",
            secret_fields=SECRET,
            opener=key,
            binding=BINDING,
        )
    message = str(info.value)
    assert "sealed" in message and "edge-agent remote" in message
    assert PASSWORD not in message


def test_unseal_merges_and_allows_only_the_secret_fields(key: SealingKey) -> None:
    blob = seal_params(key.public_key(), {"password": PASSWORD}, BINDING)
    merged = unseal_arguments(
        {"camera": "front", SEALED: blob},
        command=BINDING.command,
        secret_fields=SECRET,
        opener=key,
        binding=BINDING,
    )
    assert merged == {"camera": "front", "password": PASSWORD}
    smuggled = seal_params(key.public_key(), {"password": PASSWORD, "camera": "back"}, BINDING)
    with pytest.raises(DecodeError, match="only password may travel sealed"):
        unseal_arguments(
            {SEALED: smuggled},
            command=BINDING.command,
            secret_fields=SECRET,
            opener=key,
            binding=BINDING,
        )
    with pytest.raises(DecodeError, match="signed command"):
        unseal_arguments(
            {SEALED: blob}, command=BINDING.command, secret_fields=SECRET, opener=key, binding=None
        )
    # No secret at all is fine: the handler decides (clear, or generate one).
    assert unseal_arguments(
        {"camera": "front"},
        command=BINDING.command,
        secret_fields=SECRET,
        opener=key,
        binding=BINDING,
    ) == {"camera": "front"}


# --- hostile blobs ----------------------------------------------------------------


def _good(key: SealingKey) -> list[object]:
    item = cbor2.loads(seal_params(key.public_key(), {"password": PASSWORD}, BINDING))
    return list(item.value)


def _refused(key: SealingKey, blob: object) -> BadDataError:
    with pytest.raises(BadDataError) as info:
        key.open(blob, BINDING)
    return info.value


def test_every_truncation_is_refused(key: SealingKey) -> None:
    blob = seal_params(key.public_key(), {"password": PASSWORD}, BINDING)
    for end in range(len(blob)):
        _refused(key, blob[:end])


def test_huge_and_deep_blobs_are_refused_before_decoding(key: SealingKey) -> None:
    assert isinstance(_refused(key, b"\xd0" + b"\x59\xff\xff" + b"A" * 70_000), TooLargeError)
    assert isinstance(_refused(key, b"\x00" * (MAX_SEALED_BYTES + 1)), TooLargeError)
    assert "CBOR" in str(_refused(key, b"\x81" * 500 + b"\x00"))
    assert "CBOR" in str(_refused(key, b"\xd0" * 500 + b"\x00"))
    nested = cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, [[[[[[b""]]]]], {}, b""]))
    _refused(key, nested)


@pytest.mark.parametrize(
    "position, value",
    [
        (0, b""),
        (0, cbor.dumps({1: 3})),
        (0, cbor.dumps({1: -25, 4: b"x"})),
        (0, "text"),
        (1, []),
        (1, {}),
        (1, {-1: b"x", 4: b"k" * 16, 5: b"i" * 12}),
        (1, {-1: {1: 2, -1: 4, -2: b"x" * 32}, 4: b"k" * 16, 5: b"i" * 12}),
        (1, {-1: {1: 1, -1: 6, -2: b"x" * 32}, 4: b"k" * 16, 5: b"i" * 12}),
        (1, {-1: {1: 1, -1: 4, -2: b"x" * 31}, 4: b"k" * 16, 5: b"i" * 12}),
        (1, {-1: {1: 1, -1: 4, -2: "x" * 32}, 4: b"k" * 16, 5: b"i" * 12}),
        (2, "ciphertext"),
        (2, b"short"),
        (2, None),
    ],
)
def test_wrong_types_in_every_field_are_refused(
    key: SealingKey, position: int, value: object
) -> None:
    parts = _good(key)
    parts[position] = value
    _refused(key, cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, parts)))


@pytest.mark.parametrize(
    "blob",
    [
        None,
        "text",
        12,
        [b"a"],
        b"",
        cbor2.dumps(cbor2.CBORTag(96, [b"", {}, b"", []])),
        cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, [b"", {}])),
        cbor2.dumps([b"", {}, b""]),
        cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, "x")),
    ],
)
def test_non_blobs_are_refused(key: SealingKey, blob: object) -> None:
    _refused(key, blob)


def test_a_plaintext_that_is_not_a_map_is_refused(key: SealingKey) -> None:
    # Sealed correctly, but carrying a list: opened, then refused.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from agent import sealedparams

    parts = _good(key)
    ephemeral = x25519.X25519PrivateKey.generate()
    shared = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(key.public_key()))
    cek = sealedparams._content_key(shared, parts[0])
    iv = b"\1" * 12
    aad = sealedparams._enc_structure(parts[0], BINDING)
    parts[1] = {**parts[1], -1: {1: 1, -1: 4, -2: cose.raw_public(ephemeral.public_key())}, 5: iv}
    for plaintext in (cbor.dumps(["password"]), cbor.dumps({}), cbor.dumps({1: "x"})):
        parts[2] = AESGCM(cek).encrypt(iv, plaintext, aad)
        with pytest.raises(DecodeError):
            key.open(cbor2.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, parts)), BINDING)


# --- properties -------------------------------------------------------------------

PARAM_VALUES = st.one_of(st.text(max_size=200), st.binary(max_size=200), st.integers(), st.none())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    params=st.dictionaries(st.text(min_size=1, max_size=20), PARAM_VALUES, min_size=1, max_size=4),
    counter=st.integers(0, 2**63 - 1),
    timestamp=st.integers(0, 2**40),
)
def test_property_round_trip_for_any_map_and_binding(
    key: SealingKey, params: dict[str, object], counter: int, timestamp: int
) -> None:
    binding = dataclasses.replace(BINDING, counter=counter, timestamp=timestamp)
    blob = seal_params(key.public_key(), params, binding)
    assert key.open(blob, binding) == params
    assert parse_sealed(blob).kid == sealing_kid(key.public_key())


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=600), flip=st.integers(0, 10_000))
def test_property_any_bytes_or_bit_flip_only_raises_bad_data(
    key: SealingKey, data: bytes, flip: int
) -> None:
    with pytest.raises(BadDataError):
        key.open(data, BINDING)
    blob = bytearray(seal_params(key.public_key(), {"password": PASSWORD}, BINDING))
    index = flip % (len(blob) * 8)
    blob[index // 8] ^= 1 << (index % 8)
    try:
        opened = key.open(bytes(blob), BINDING)
    except BadDataError:
        return
    # X25519 ignores the top bit of a public key (RFC 7748), so a flip there still
    # opens: to the very same map, never to another one.
    assert opened == {"password": PASSWORD}


def test_open_params_rejects_a_non_bytes_blob_before_any_crypto() -> None:
    private = x25519.X25519PrivateKey.generate()
    with pytest.raises(DecodeError, match="bytes of a COSE_Encrypt0"):
        open_params(private, {"password": PASSWORD}, BINDING)


# --- the worked example of docs/sealed-parameters.md ------------------------------

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sealed-parameters.md"
EXAMPLE_DEVICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
EXAMPLE_BINDING = Binding(
    "d3f2a1b0c9d8e7f60", "camera.set_credentials", 1764568800000000, 1764568800
)


def _doc_hex_after(marker: str) -> str:
    """The hex block (indented lines) following ``marker`` in the document."""
    lines = DOC.read_text().split(marker, 1)[1].splitlines()[1:]
    hex_text = ""
    for line in lines:
        if not line.strip():
            if hex_text:
                break
            continue
        if not line.startswith("    "):
            break
        hex_text += line.strip()
    assert hex_text
    return hex_text


def test_the_documented_worked_example_opens_and_binds() -> None:
    device = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(EXAMPLE_DEVICE))
    blob = bytes.fromhex(_doc_hex_after("The whole `sealed` argument (125 bytes):"))
    assert len(blob) == 125
    assert open_params(device, blob, EXAMPLE_BINDING) == {"password": "Front-Pass-5512"}
    with pytest.raises(VerificationError):
        open_params(device, blob, dataclasses.replace(EXAMPLE_BINDING, counter=1))
    text = DOC.read_text()
    assert cose.raw_public(device.public_key()).hex() in text
    assert sealing_kid(cose.raw_public(device.public_key())).hex() in text
    assert EXAMPLE_BINDING.external_aad().hex()[:66] in text
