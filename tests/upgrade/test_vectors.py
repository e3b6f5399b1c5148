"""The SUIT draft's public examples verify; features this device lacks are refused clearly."""

from __future__ import annotations

import re

import pytest

from agent.errors import VerificationError
from agent.upgrade.envelope import authenticate, decode_envelope, verify_envelope
from agent.upgrade.errors import UnsupportedAlgorithmError, UnsupportedFeatureError
from agent.upgrade.keys import KeySet, key_from_bytes
from agent.upgrade.settings import SignatureAlgorithm
from tests.conftest import vector_path

SIGNED_BLOCK = re.compile(r"Envelope with COSE authentication object:\s*~~~\n([0-9a-f\n]+)~~~")
EXAMPLES = tuple(f"example{n}" for n in range(6))


def _envelopes() -> dict[str, bytes]:
    """Each draft example's signed envelope; a missing file or block fails the test."""
    found = {}
    for name in EXAMPLES:
        blocks = SIGNED_BLOCK.findall(vector_path(f"suit/{name}.txt").read_text())
        assert len(blocks) == 1, f"suit/{name}.txt: {len(blocks)} signed envelopes, expected 1"
        found[name] = bytes.fromhex(blocks[0].replace("\n", ""))
    return found


@pytest.fixture
def es256_keys() -> KeySet:
    pem = vector_path("suit/public_key_es256.pem").read_bytes()
    return KeySet.from_keys([key_from_bytes(pem)], [SignatureAlgorithm.ES256])


def test_every_draft_example_authenticates(es256_keys: KeySet) -> None:
    envelopes = _envelopes()
    assert len(envelopes) == 6
    for name, data in envelopes.items():
        signers = authenticate(decode_envelope(data), es256_keys)
        assert [k.key_id for k in signers] == [es256_keys.keys[0].key_id], name


def test_single_image_examples_are_interpreted(es256_keys: KeySet) -> None:
    envelopes = _envelopes()
    ex1 = verify_envelope(envelopes["example1"], es256_keys).manifest
    assert ex1.sequence == 1
    assert ex1.uri == "http://example.com/file.bin"
    assert ex1.image_size == 34768
    assert str(ex1.class_id) == "1492af14-2569-5e48-bf42-9b2d51f2ab45"
    assert str(ex1.vendor_id) == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe"
    # example2 severs its install sequence: its digest in the manifest must match.
    ex2 = verify_envelope(envelopes["example2"], es256_keys).manifest
    assert ex2.uri == "http://example.com/very/long/path/to/file/file.bin"
    assert verify_envelope(envelopes["example0"], es256_keys).manifest.uri is None


@pytest.mark.parametrize(
    ("name", "feature"),
    [
        ("example3", "directive-try-each"),
        ("example4", "load sequence"),
        ("example5", "2 components"),
    ],
)
def test_unsupported_features_are_rejected_clearly(
    es256_keys: KeySet, name: str, feature: str
) -> None:
    with pytest.raises(UnsupportedFeatureError, match=feature):
        verify_envelope(_envelopes()[name], es256_keys)


def test_es256_is_refused_unless_policy_accepts_it(es256_keys: KeySet) -> None:
    eddsa_only = KeySet.from_keys(es256_keys.keys, [SignatureAlgorithm.ED25519])
    with pytest.raises(UnsupportedAlgorithmError):
        verify_envelope(_envelopes()["example1"], eddsa_only)


def test_tampered_example_manifest_fails_digest(es256_keys: KeySet) -> None:
    data = bytearray(_envelopes()["example1"])
    index = data.index(bytes.fromhex("1987d0"))  # image-size 34768
    data[index + 2] ^= 1
    with pytest.raises(VerificationError, match="digest"):
        verify_envelope(bytes(data), es256_keys)


def test_example_signature_over_other_digest_fails(es256_keys: KeySet) -> None:
    envelopes = _envelopes()
    ex0 = envelopes["example0"]
    ex1 = envelopes["example1"]
    # Splice example0's signature into example1's authentication wrapper.
    sig0 = ex0[ex0.index(bytes.fromhex("d28443")) : ex0.index(bytes.fromhex("d28443")) + 76]
    start = ex1.index(bytes.fromhex("d28443"))
    spliced = ex1[:start] + sig0 + ex1[start + 76 :]
    with pytest.raises(VerificationError, match="trusted key"):
        verify_envelope(spliced, es256_keys)
