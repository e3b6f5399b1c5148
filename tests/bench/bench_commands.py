"""Signed commands: what authorisation costs per command, against unsigned ones in the same run.

On one in-process router -- the daemon's ``CommandRouter`` over the spine's
composition, its SQLite database in a temporary directory -- the same run
measures:

* a signed ``consent.get`` through ``CommandRouter.handle``: COSE parse, key
  lookup, Ed25519 verify, device/name/window/role checks, the replay counter
  committed (one SQLite transaction), the handler, the reply encoded;
* ``Authoriser.authorise`` alone on the same kind of command, and its two
  main parts apart: the Ed25519 verification and the durable counter commit;
* the peer: an unsigned public ``status`` through the same router (CBOR decode,
  dispatch, reply) -- everything but the authorisation;
* on the client, ``sign_command`` per command against CBOR-encoding the same
  arguments unsigned.

Commands are signed before the clock starts (each needs its own counter), so
the device-side rates exclude the client's signing and vice versa.  Goal: one
full loop pass of commands (``MAX_COMMANDS_PER_PASS``, 32) authorised in at
most a third of a second, i.e. >= 100 signed commands/s.
"""

from __future__ import annotations

import pathlib
import tempfile
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import cbor
from agent.auth import cose
from agent.auth.cose import raw_public
from agent.auth.envelope import sign_command
from agent.auth.principals import key_id
from agent.commands import CommandRouter, status_command
from agent.config import AgentConfig
from agent.feature import Mode
from drivers.compose import Composition, compose
from tests.bench.run import Report

COMMANDS = 2_000
GOAL_SIGNED_PER_SECOND = 100
GOAL_SIGN_MICROSECONDS = 1_000


def _rate(count: int, work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def _router(c: Composition) -> CommandRouter:
    # As drivers/runtime.Agent builds it, with a status that needs no running agent.
    router = CommandRouter(c.authoriser, callers=c.callers, confidential=c.confidential)
    for name, handler in c.commands.items():
        router.register(name, handler)
    router.register("status", status_command(lambda: {"device": c.topics.device, "bound": True}))
    return router


def _signed_batch(
    key: ed25519.Ed25519PrivateKey, device_id: str, start: int, count: int
) -> list[bytes]:
    now = time.time()
    return [
        sign_command(key, device_id, "consent.get", {}, counter=start + k, now=now)
        for k in range(count)
    ]


def device_side(workdir: pathlib.Path) -> dict[str, float]:
    """Rates per second: signed/authorise/verify/counter/unsigned."""
    c = compose(AgentConfig(state_dir=workdir / "state"), Mode.CLI, builders=())
    try:
        key = ed25519.Ed25519PrivateKey.generate()
        device_id = c.principals.bind_owner(
            raw_public(key.public_key()), "bench owner", time.time(), source="bench"
        )
        router = _router(c)
        counter = time.time_ns() // 1000
        signed = _signed_batch(key, device_id, counter, COMMANDS)
        for_authoriser = _signed_batch(key, device_id, counter + COMMANDS, COMMANDS)
        unsigned = cbor.dumps({})
        # Warm-up: page cache, prepared statements, lazily imported modules.
        router.handle("status", unsigned, time.time())

        def handle_signed() -> None:
            now = time.time()
            for payload in signed:
                router.handle("consent.get", payload, now)

        def authorise_only() -> None:
            now = time.time()
            for payload in for_authoriser:
                c.authoriser.authorise("consent.get", payload, now)

        def handle_unsigned() -> None:
            now = time.time()
            for _ in range(COMMANDS):
                router.handle("status", unsigned, now)

        public = raw_public(key.public_key())

        def verify_only() -> None:
            for payload in signed:
                message = cose.parse_sign1(cbor.loads_untrusted(payload, max_bytes=1 << 16))
                cose.verify_sign1(message, public)

        def counter_only() -> None:
            kid = key_id(public)
            for k in range(COMMANDS):
                c.principals.advance_counter(kid, counter + 3 * COMMANDS + k)

        rates = {"signed": _rate(COMMANDS, handle_signed)}
        assert router.failed == 0, "a signed command was refused: the bench measured refusals"
        rates["authorise"] = _rate(COMMANDS, authorise_only)
        rates["verify"] = _rate(COMMANDS, verify_only)
        rates["counter"] = _rate(COMMANDS, counter_only)
        rates["unsigned"] = _rate(COMMANDS, handle_unsigned)
        assert router.failed == 0
        return rates
    finally:
        c.close()


def client_side() -> tuple[float, float]:
    """(microseconds per sign_command, microseconds per unsigned CBOR encoding)."""
    key = ed25519.Ed25519PrivateKey.generate()
    args = {"purpose": "cloud_events", "granted": True}
    counter = time.time_ns() // 1000

    def sign() -> None:
        now = time.time()
        for k in range(COMMANDS):
            sign_command(key, "d0123456789abcdef", "consent.set", args, counter=counter + k,
                         now=now)

    def encode() -> None:
        for _ in range(COMMANDS):
            cbor.dumps(args)

    sign()  # warm-up
    return 1e6 / _rate(COMMANDS, sign), 1e6 / _rate(COMMANDS, encode)


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rates = device_side(pathlib.Path(tmp))
    unsigned = rates["unsigned"]
    peer = f"unsigned status, same router {unsigned:,.0f}/s"
    report.row(
        "commands", f"signed consent.get handled/s ({COMMANDS}, verify + counter commit)",
        f"{rates['signed']:,.0f}/s", peer=peer, ratio=unsigned / rates["signed"],
        goal=f">= {GOAL_SIGNED_PER_SECOND}/s", met=rates["signed"] >= GOAL_SIGNED_PER_SECOND,
    )
    for name, metric in (
        ("authorise", "Authoriser.authorise alone/s (signed consent.get)"),
        ("verify", "  of which COSE parse + Ed25519 verify/s"),
        ("counter", "  of which replay counter committed to SQLite/s"),
    ):
        report.row("commands", metric, f"{rates[name]:,.0f}/s", peer=peer,
                   ratio=unsigned / rates[name])
    sign_us, encode_us = client_side()
    report.row(
        "commands", "client: sign_command per command", f"{sign_us:,.0f} us",
        peer=f"CBOR of the same args unsigned {encode_us:,.1f} us", ratio=sign_us / encode_us,
        goal=f"<= {GOAL_SIGN_MICROSECONDS} us", met=sign_us <= GOAL_SIGN_MICROSECONDS,
    )
