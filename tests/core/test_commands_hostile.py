"""Hostile MQTT commands: the router answers every one and never raises."""

from __future__ import annotations

import time
from pathlib import Path

import cbor2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.auth.authoriser import Authoriser, CallerSlot
from agent.auth.principals import PrincipalStore
from agent.auth.roles import CommandPolicy
from agent.cbor import loads_untrusted
from agent.commands import CommandRouter, consent_commands
from agent.consent import ConsentLedger
from agent.database import Database
from agent.errors import DecodeError
from agent.purposes import Purpose
from drivers.clock import SystemClock
from tests.support.mqtt import decode_payload
from tests.support.owner import Signer

OWNER = Signer()


def router(tmp_path: Path) -> tuple[CommandRouter, ConsentLedger]:
    ledger = ConsentLedger.open(tmp_path, "v1")
    store = PrincipalStore(Database.in_state_dir(tmp_path))
    if store.owner() is None:
        OWNER.enrol(store)
    callers = CallerSlot()
    authoriser = Authoriser(store, CommandPolicy(), max_bytes=4096, max_skew_seconds=300)
    r = CommandRouter(authoriser, callers=callers)
    for name, handler in consent_commands(ledger, SystemClock(), callers).items():
        r.register(name, handler)

    def explode(args: object) -> dict[str, object]:
        raise RuntimeError("secret internal detail")

    r.register("explode", explode)
    r.device_id = store.device_id  # type: ignore[attr-defined]
    return r, ledger


def signed(r: CommandRouter, name: str, args: dict[str, object]) -> bytes:
    return OWNER.sign(r.device_id, name, args)  # type: ignore[attr-defined]


def reply(r: CommandRouter, name: str, payload: bytes) -> dict[str, object]:
    handled = r.handle(name, payload, time.time())
    decoded = decode_payload(handled.reply)  # JSON when the payload read as JSON
    assert isinstance(decoded, dict)
    return decoded


def test_handler_crash_becomes_internal_error_without_details(tmp_path: Path) -> None:
    r, _ = router(tmp_path)
    answer = reply(r, "explode", signed(r, "explode", {}))
    assert answer == {"ok": False, "error": {"code": "internal", "message": "internal error"}}


def test_indefinite_length_and_duplicate_keys_are_refused(tmp_path: Path) -> None:
    r, ledger = router(tmp_path)
    indefinite = b"\xbf\x67purpose\x6ccloud_events\x67granted\xf5\xff"
    assert reply(r, "consent.set", indefinite)["ok"] is False
    duplicate = b"\xa2\x67granted\xf5\x67granted\xf4"
    assert reply(r, "consent.set", duplicate)["ok"] is False
    assert not ledger.is_granted(Purpose.CLOUD_EVENTS)


def test_command_names_with_wildcards_or_huge_names_are_unknown(tmp_path: Path) -> None:
    r, _ = router(tmp_path)
    for name in ("consent.set/x", "#", "a" * 10_000, "Consent.Set", ""):
        assert reply(r, name, b"\xa0")["error"]["code"] == "unknown_command"  # type: ignore[index]


def test_cbor_bomb_declaring_huge_lengths_is_a_decode_error() -> None:
    for bomb in (b"\x5b" + b"\xff" * 8, b"\x9b" + b"\x7f" * 8, b"\xbb" + b"\x7f" * 8):
        try:
            loads_untrusted(bomb, max_bytes=100)
        except DecodeError:
            continue
        raise AssertionError(f"{bomb!r} decoded")


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=st.text(max_size=80), payload=st.binary(max_size=600))
def test_router_never_raises_on_arbitrary_input(tmp_path: Path, name: str, payload: bytes) -> None:
    r, _ = router(tmp_path)
    answer = reply(r, name, payload)
    assert isinstance(answer["ok"], bool)


@settings(
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    args=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=30,
    )
)
@example(args={"purpose": [], "granted": True})  # found by CI: a list where a name belongs
@example(args={"purpose": {"cloud_events": 1}, "granted": True})
def test_consent_set_with_arbitrary_structured_args_only_succeeds_when_valid(
    tmp_path: Path, args: object
) -> None:
    r, _ = router(tmp_path)
    payload = signed(r, "consent.set", args) if isinstance(args, dict) else cbor2.dumps(args)
    answer = reply(r, "consent.set", payload)
    valid = (
        isinstance(args, dict)
        and isinstance(args.get("purpose"), str)  # a list or map is unhashable: never valid
        and args["purpose"] in {p.value for p in Purpose if p.needs_consent}
        and isinstance(args.get("granted"), bool)
    )
    assert answer["ok"] is valid
