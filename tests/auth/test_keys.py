"""Owner key files: 0600, never clobbered, read back only when private; public key forms."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from agent.auth.principals import key_id
from agent.errors import DecodeError, NotFoundError, PolicyError
from drivers.auth.client import (
    generate_key,
    key_id_hex,
    load_private_key,
    parse_public_key,
    public_key_hex,
    public_key_pem,
    public_key_raw,
    save_private_key,
)


def test_saved_key_is_pkcs8_pem_0600_and_loads_back_the_same_key(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "owner.key"
    # A strict umask would leave 0400 (unreadable tomorrow if chmod'ed wrong): exactly 0600.
    previous = os.umask(0o277)
    try:
        save_private_key(path, key)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(path)
    assert public_key_raw(loaded) == public_key_raw(key)
    assert key_id_hex(loaded) == key_id(public_key_raw(key)).hex()
    assert [p.name for p in tmp_path.iterdir()] == ["owner.key"]  # no temp file left behind


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    save_private_key(path, generate_key())
    before = path.read_bytes()
    with pytest.raises(PolicyError, match="refusing to overwrite"):
        save_private_key(path, generate_key())
    assert path.read_bytes() == before
    save_private_key(path, generate_key(), overwrite=True)
    assert path.read_bytes() != before


def test_racing_writers_leave_exactly_one_key(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    keys = [generate_key() for _ in range(8)]
    outcomes: list[str] = []

    def write(key: ed25519.Ed25519PrivateKey) -> None:
        try:
            save_private_key(path, key)
            outcomes.append("saved")
        except PolicyError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["saved"]
    assert public_key_raw(load_private_key(path)) in {public_key_raw(k) for k in keys}


def test_load_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    save_private_key(path, generate_key())
    path.chmod(0o644)
    with pytest.raises(PolicyError, match="chmod 600"):
        load_private_key(path)


def test_load_refuses_missing_other_and_encrypted_keys(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_private_key(tmp_path / "absent.key")
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_key.chmod(0o600)
    with pytest.raises(DecodeError, match="not an Ed25519"):
        load_private_key(ec_key)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        generate_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    locked.chmod(0o600)
    with pytest.raises(DecodeError, match="encrypted"):
        load_private_key(locked)


def test_public_key_is_read_from_hex_or_files_but_never_from_a_private_key(
    tmp_path: Path,
) -> None:
    key = generate_key()
    raw = public_key_raw(key)
    assert parse_public_key(public_key_hex(key)) == raw
    assert parse_public_key(public_key_hex(key).upper()) == raw
    for name, content in (
        ("pub.pem", public_key_pem(key)),
        ("pub.hex", public_key_hex(key).encode() + b"\n"),
        ("pub.raw", raw),
    ):
        (tmp_path / name).write_bytes(content)
        assert parse_public_key(str(tmp_path / name)) == raw, name
    save_private_key(tmp_path / "owner.key", key)
    with pytest.raises(DecodeError, match="private key"):
        parse_public_key(str(tmp_path / "owner.key"))
    with pytest.raises(NotFoundError):
        parse_public_key("abc123")
    (tmp_path / "junk").write_bytes(b"not a key at all")
    with pytest.raises(DecodeError):
        parse_public_key(str(tmp_path / "junk"))
