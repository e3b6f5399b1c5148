"""The authorisation core over bytes: signatures, counters, roles, sealed replies."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.auth import cose
from agent.auth.authoriser import Authoriser, UnauthorizedError
from agent.auth.principals import PrincipalStore
from agent.auth.roles import CommandPolicy, Role
from agent.database import Database
from agent.errors import BadDataError, PolicyError, VerificationError
from tests.support.owner import Signer


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    def record(self, kind: str, detail: dict[str, object], now: float) -> None:
        self.records.append((kind, dict(detail)))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.in_state_dir(tmp_path)
    yield database
    database.close()


def make(db: Database, audit: Audit | None = None) -> tuple[Authoriser, PrincipalStore, Signer]:
    store = PrincipalStore(db)
    owner = Signer()
    owner.enrol(store)
    policy = CommandPolicy(public={"status"})
    policy.allow({"logs.upload": {Role.TECHNICIAN}})
    authoriser = Authoriser(store, policy, max_bytes=65536, max_skew_seconds=300, audit=audit)
    return authoriser, store, owner


def test_owner_command_passes_and_carries_its_caller(db: Database) -> None:
    authoriser, store, owner = make(db)
    payload = owner.sign(store.device_id, "consent.set", {"purpose": "x", "granted": True})
    authorised = authoriser.authorise("consent.set", payload, time.time())
    assert authorised.args == {"purpose": "x", "granted": True}
    assert authorised.caller.principal is not None
    assert authorised.caller.description.startswith("owner:")


def test_counter_survives_a_restart(tmp_path: Path) -> None:
    db = Database.in_state_dir(tmp_path)
    authoriser, store, owner = make(db)
    payload = owner.sign(store.device_id, "consent.get", {})
    authoriser.authorise("consent.get", payload, time.time())
    device_id = store.device_id
    db.close()
    reopened = Database.in_state_dir(tmp_path)
    try:
        store2 = PrincipalStore(reopened)
        assert store2.device_id == device_id
        again = Authoriser(store2, CommandPolicy(), max_bytes=65536, max_skew_seconds=300)
        with pytest.raises(UnauthorizedError, match="replay"):
            again.authorise("consent.get", payload, time.time())
    finally:
        reopened.close()


def test_a_refused_command_does_not_burn_the_counter(db: Database) -> None:
    authoriser, store, _owner = make(db)
    technician = Signer(Role.TECHNICIAN)
    technician.enrol(store)
    refused = technician.sign(store.device_id, "data.erase", {}, counter=10)
    with pytest.raises(UnauthorizedError, match="role technician may not"):
        authoriser.authorise("data.erase", refused, time.time())
    allowed = technician.sign(store.device_id, "logs.upload", {}, counter=10)
    assert authoriser.authorise("logs.upload", allowed, time.time()).caller.principal


def test_tampered_signature_and_tampered_payload_are_refused(db: Database) -> None:
    authoriser, store, owner = make(db)
    payload = owner.sign(store.device_id, "consent.get", {})
    item = cbor2.loads(payload)
    protected, _unprotected, body, signature = item.value
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    for forged in (
        cbor2.dumps(cbor2.CBORTag(18, [protected, {}, body, flipped])),
        cbor2.dumps(cbor2.CBORTag(18, [protected, {}, body.replace(b"get", b"set"), signature])),
    ):
        with pytest.raises(UnauthorizedError, match="does not verify"):
            authoriser.authorise("consent.get", forged, time.time())


def test_unsigned_public_command_passes_and_unsigned_guarded_one_is_refused(
    db: Database,
) -> None:
    audit = Audit()
    authoriser, _, _ = make(db, audit)
    assert authoriser.authorise("status", cbor2.dumps({}), time.time()).args == {}
    with pytest.raises(UnauthorizedError):
        authoriser.authorise("data.export", cbor2.dumps({}), time.time())
    kind, detail = audit.records[-1]
    assert kind == "command.refused"
    assert detail == {
        "command": "data.export",
        "missing_role": "owner",
        "signer": "anonymous",
        "reason": "the command is not signed",
    }


def test_a_refusal_flood_is_audited_up_to_the_cap_then_counted(db: Database) -> None:
    audit = Audit()
    authoriser, _, _ = make(db, audit)
    start = 6000.0
    for k in range(authoriser.audited_per_minute + 25):
        with pytest.raises(UnauthorizedError):
            authoriser.authorise("data.erase", b"\xa0", start + k * 0.01)
    assert len(audit.records) == authoriser.audited_per_minute
    with pytest.raises(UnauthorizedError):
        authoriser.authorise("data.erase", b"\xa0", start + 61)
    assert ("command.refused.suppressed", {"count": 25}) in audit.records


def test_owner_is_bound_once_and_unbind_forgets_every_key(db: Database) -> None:
    store = PrincipalStore(db)
    owner, intruder = Signer(), Signer()
    first_id = store.device_id
    owner.enrol(store)
    bound_id = store.device_id
    assert bound_id != first_id
    with pytest.raises(PolicyError, match="already bound"):
        intruder.enrol(store)
    with pytest.raises(PolicyError, match="already has an owner"):
        store.add(Role.OWNER, intruder.public_key, "x", 0.0, added_by="test")
    assert store.unbind() not in (first_id, bound_id)
    assert store.principals() == []


def test_sealed_reply_opens_only_with_the_requesters_key() -> None:
    requester, other = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    sealed = cose.seal(cose.raw_public(requester.public_key()), b"the owner's data")
    assert b"the owner's data" not in sealed
    assert cose.open_sealed(requester, sealed, max_bytes=4096) == b"the owner's data"
    with pytest.raises(VerificationError):
        cose.open_sealed(other, sealed, max_bytes=4096)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xd2\x84",  # a truncated COSE_Sign1
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])),  # no alg, no kid
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: b"k"}), {}, b"", b""])),  # ES256
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8, 4: b"k" * 33}), {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(96, [b"", {}, b"", []])),  # wrong tag
        cbor2.dumps(cbor2.CBORTag(18, "not an array")),
        cbor2.dumps([1, 2, 3]),
    ],
    ids=["truncated", "no-headers", "es256", "huge-kid", "encrypt-tag", "tag-on-text", "array"],
)
def test_malformed_envelope_attack_is_bad_data(db: Database, payload: bytes) -> None:
    authoriser, _, _ = make(db)
    with pytest.raises(BadDataError):
        authoriser.authorise("consent.set", payload, time.time())


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(["status", "consent.set", "logs.upload"]),
    payload=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, u, b, s])),
            st.binary(max_size=40)
            | st.builds(
                cbor2.dumps,
                st.dictionaries(
                    st.integers(-10, 10), st.integers(-20, 20) | st.binary(max_size=33), max_size=3
                ),
            ),
            st.dictionaries(st.integers(-5, 5), st.integers(), max_size=2),
            st.binary(max_size=100),
            st.binary(max_size=70),
        ),
    ),
)
def test_authorise_only_ever_raises_bad_data(db: Database, name: str, payload: bytes) -> None:
    authoriser, _, _ = make_cached(db)
    with contextlib.suppress(BadDataError):
        authoriser.authorise(name, payload, time.time())


_CACHE: dict[int, tuple[Authoriser, PrincipalStore, Signer]] = {}


def make_cached(db: Database) -> tuple[Authoriser, PrincipalStore, Signer]:
    if id(db) not in _CACHE:
        _CACHE.clear()
        _CACHE[id(db)] = make(db)
    return _CACHE[id(db)]
