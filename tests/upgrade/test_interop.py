"""Interop with an independent COSE implementation (pycose 1.1.0, in its own venv).

pycose makes the signatures (its own keys, its own COSE_Sign1 encoding, a
Nordic suit-generator style ``kid`` -- a CBOR-encoded integer, not our SHA-256
prefix) and the agent must accept them; the agent's ``upgrade sign`` output
must verify in pycose.  Refusals must name the real reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Callable

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.upgrade.builder import ManifestSpec, build_manifest, public_key_pem
from agent.upgrade.envelope import authenticate, decode_envelope, verify_envelope
from agent.upgrade.errors import BadSignatureError, UnknownKeyError
from agent.upgrade.keys import KeySet, TrustedKey, key_from_bytes
from agent.upgrade.machine import State
from agent.upgrade.settings import SignatureAlgorithm
from drivers.cli import main
from drivers.upgrade.service import build_installer
from tests.conftest import vector_path
from tests.upgrade.conftest import CLASS_ID, HARDWARE_CLASS, VENDOR_DOMAIN, VENDOR_ID, random_image
from tests.upgrade.imageserver import ImageServer
from tests.upgrade.pycose_env import pycose_python, run_pycose
from tests.upgrade.test_vectors import _envelopes

NORDIC_KID = cbor2.dumps(0x4000AA00)  # suit-generator: kid = cbor2.dumps(integer key id)
ALL_ALGORITHMS = tuple(SignatureAlgorithm)


@pytest.fixture(scope="module")
def pycose() -> pathlib.Path:
    return pycose_python()


def _public(spec: dict[str, str]) -> TrustedKey:
    """The pycose key's public half as SubjectPublicKeyInfo, for our trust store."""
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    if spec["kty"] == "OKP":
        key = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(spec["x"]))
    else:
        numbers = ec.EllipticCurvePublicNumbers(
            int(spec["x"], 16), int(spec["y"], 16), ec.SECP256R1()
        )
        key = numbers.public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_from_bytes(der)


def _keygen(pycose: pathlib.Path, kty: str = "OKP") -> tuple[dict[str, str], TrustedKey]:
    reply = run_pycose(pycose, {"op": "keygen", "kty": kty})
    key, public = reply["key"], reply["public"]
    assert isinstance(key, dict) and isinstance(public, dict)
    return key, _public(public)


def _manifest(image: bytes, uri: str, sequence: int = 1) -> bytes:
    spec = ManifestSpec(
        sequence=sequence,
        vendor_id=VENDOR_ID,
        class_id=CLASS_ID,
        image_digest=hashlib.sha256(image).digest(),
        image_size=len(image),
        uri=uri,
    )
    return build_manifest(spec)


def _pycose_sign(
    pycose: pathlib.Path,
    key: dict[str, str],
    manifest: bytes,
    *,
    alg: str = "EdDSA",
    kid: bytes | None = NORDIC_KID,
    kid_header: str = "protected",
    detached: bool = True,
) -> bytes:
    request = {
        "op": "sign",
        "key": key,
        "alg": alg,
        "manifest": manifest.hex(),
        "kid": None if kid is None else kid.hex(),
        "kid_header": kid_header,
        "detached": detached,
    }
    envelope = run_pycose(pycose, request)["envelope"]
    assert isinstance(envelope, str)
    return bytes.fromhex(envelope)


def _keys(*trusted: TrustedKey) -> KeySet:
    return KeySet.from_keys(trusted, ALL_ALGORITHMS)


def test_pycose_envelope_with_a_suit_generator_kid_installs(
    pycose: pathlib.Path,
    tmp_path: pathlib.Path,
    make_config: Callable[..., AgentConfig],
    image_server: ImageServer,
) -> None:
    key, public = _keygen(pycose)
    (tmp_path / "foreign.pub.pem").write_bytes(
        public.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    image = random_image(100_000)
    image_server.files["/fw.img"] = image
    envelope = _pycose_sign(pycose, key, _manifest(image, image_server.url("/fw.img")))
    config = make_config()
    config = dataclasses.replace(
        config,
        upgrade=dataclasses.replace(config.upgrade, trusted_keys=(tmp_path / "foreign.pub.pem",)),
    )
    installer, machine = build_installer(config)
    assert machine is not None
    record = installer.install(envelope)
    assert record.state == State.AWAITING_REBOOT
    assert (machine.directory / "slot-b.img").read_bytes() == image


@pytest.mark.parametrize("kid_header", ["protected", "unprotected"])
def test_foreign_kid_tries_every_trusted_key(pycose: pathlib.Path, kid_header: str) -> None:
    key, public = _keygen(pycose)
    others = [key_from_bytes(public_key_pem(ed25519.Ed25519PrivateKey.generate())) for _ in "ab"]
    envelope = _pycose_sign(pycose, key, _manifest(b"x", "https://h/x"), kid_header=kid_header)
    verified = verify_envelope(envelope, _keys(others[0], public, others[1]))
    assert verified.signers == (public.key_id,)


def test_es256_and_no_kid_from_pycose(pycose: pathlib.Path) -> None:
    key, public = _keygen(pycose, "EC2")
    envelope = _pycose_sign(pycose, key, _manifest(b"y", "https://h/y"), alg="ES256", kid=None)
    assert verify_envelope(envelope, _keys(public)).signers == (public.key_id,)


def test_unknown_signer_is_named_as_such(pycose: pathlib.Path) -> None:
    key, _ = _keygen(pycose)
    trusted = key_from_bytes(public_key_pem(ed25519.Ed25519PrivateKey.generate()))
    envelope = _pycose_sign(pycose, key, _manifest(b"z", "https://h/z"))
    with pytest.raises(UnknownKeyError, match=f"key id {NORDIC_KID.hex()}.*not a trusted key"):
        verify_envelope(envelope, _keys(trusted))
    anonymous = _pycose_sign(pycose, key, _manifest(b"z", "https://h/z"), kid=None)
    with pytest.raises(UnknownKeyError, match="no trusted key verifies"):
        verify_envelope(anonymous, _keys(trusted))
    # Only an ES256 signature, only Ed25519 keys trusted: the type mismatch is the reason.
    ec_key, _ = _keygen(pycose, "EC2")
    es256 = _pycose_sign(pycose, ec_key, _manifest(b"z", "https://h/z"), alg="ES256")
    with pytest.raises(UnknownKeyError, match=r"algorithm -7.*no trusted key"):
        verify_envelope(es256, _keys(trusted))


def test_a_trusted_kid_with_a_bad_signature_is_a_bad_signature(pycose: pathlib.Path) -> None:
    _, public = _keygen(pycose)
    impostor, _ = _keygen(pycose)
    # The impostor claims the trusted key's id: that key alone is tried, and it says no.
    envelope = _pycose_sign(pycose, impostor, _manifest(b"w", "https://h/w"), kid=public.key_id)
    with pytest.raises(BadSignatureError, match=f"trusted key {public.key_id.hex()} does not"):
        verify_envelope(envelope, _keys(public))


def test_a_malformed_signature_is_named_malformed(pycose: pathlib.Path) -> None:
    key, public = _keygen(pycose)
    embedded = _pycose_sign(pycose, key, _manifest(b"v", "https://h/v"), detached=False)
    with pytest.raises(DecodeError, match="detached"):
        verify_envelope(embedded, _keys(public))


def _cli_sign(tmp_path: pathlib.Path, alg: str | None) -> tuple[bytes, pathlib.Path]:
    key = tmp_path / "vendor.pem"
    if not key.exists():
        assert main(["upgrade", "keygen", "--out", str(key)]) == 0
    image = tmp_path / "fw.img"
    image.write_bytes(random_image(5000))
    out = tmp_path / f"fw-{alg}.suit"
    argv = ["upgrade", "sign", "--key", str(key), "--image", str(image), "--sequence", "3"]
    argv += ["--hardware-class", HARDWARE_CLASS, "--vendor-domain", VENDOR_DOMAIN]
    argv += ["--uri", "https://cdn.example/fw.img", "--out", str(out)]
    if alg is not None:
        argv += ["--alg", alg]
    assert main(argv) == 0
    return out.read_bytes(), tmp_path / "vendor.pub.pem"


def _cose_alg(envelope: bytes) -> int:
    sign1 = cbor2.loads(cbor2.loads(cbor2.loads(envelope).value[2])[1])
    alg = cbor2.loads(sign1.value[0])[1]
    assert isinstance(alg, int)
    return alg


@pytest.mark.parametrize(("alg", "cose_id"), [(None, -8), ("EdDSA", -8), ("Ed25519", -19)])
def test_upgrade_sign_alg_and_pycose_reads_eddsa(
    pycose: pathlib.Path, tmp_path: pathlib.Path, alg: str | None, cose_id: int
) -> None:
    envelope, pub = _cli_sign(tmp_path, alg)
    assert _cose_alg(envelope) == cose_id
    trusted = key_from_bytes(pub.read_bytes())
    assert verify_envelope(envelope, _keys(trusted)).signers == (trusted.key_id,)
    raw = trusted.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    verdict = run_pycose(
        pycose,
        {"op": "verify", "envelope": envelope.hex(), "public": {"kty": "OKP", "x": raw.hex()}},
    )["results"]
    assert isinstance(verdict, list) and len(verdict) == 1
    if cose_id == -8:
        assert verdict == [True]
    else:  # why --alg exists: pycose 1.1 does not know the fully specified Ed25519 id
        assert isinstance(verdict[0], str) and verdict[0].startswith("error")


def test_upgrade_sign_refuses_an_algorithm_the_key_cannot_make(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AssertionError):
        _cli_sign(tmp_path, "ES256")
    assert "algorithm -7 does not fit an Ed25519 key" in capsys.readouterr().err


def test_pycose_and_the_agent_agree_on_the_suit_draft_vectors(pycose: pathlib.Path) -> None:
    pem = vector_path("suit/public_key_es256.pem").read_bytes()
    draft_key = key_from_bytes(pem)
    assert isinstance(draft_key.public_key, ec.EllipticCurvePublicKey)
    numbers = draft_key.public_key.public_numbers()
    public = {"kty": "EC2", "x": f"{numbers.x:064x}", "y": f"{numbers.y:064x}"}
    keys = KeySet.from_keys([draft_key], ALL_ALGORITHMS)
    for name, envelope in _envelopes().items():
        verdict = run_pycose(pycose, {"op": "verify", "envelope": envelope.hex(), "public": public})
        assert verdict["results"] == [True], name
        assert authenticate(decode_envelope(envelope), keys) == [draft_key], name
    # ... and on one whose signature was altered.
    top = cbor2.loads(_envelopes()["example1"])
    auth = cbor2.loads(top.value[2])
    sign1 = cbor2.loads(auth[1])
    protected, unprotected, payload, signature = sign1.value
    altered = bytes([signature[0] ^ 1]) + signature[1:]
    sign1 = cbor2.CBORTag(18, [protected, unprotected, payload, altered])
    body = {**top.value, 2: cbor2.dumps([auth[0], cbor2.dumps(sign1)])}
    tampered = cbor2.dumps(cbor2.CBORTag(107, body))
    verdict = run_pycose(pycose, {"op": "verify", "envelope": tampered.hex(), "public": public})
    assert verdict["results"] == [False]
    with pytest.raises(UnknownKeyError, match="no trusted key verifies"):
        authenticate(decode_envelope(tampered), keys)
