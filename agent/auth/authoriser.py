"""The one check every command passes before its handler runs.

Order: structure (capped CBOR), a key this device trusts, its signature, the
device id and command name it was signed for, the time window, the role, and
last the replay counter -- advanced and committed only for a command that
passed everything else, so a refused command cannot burn a counter.  Every
refusal is audited with the role that was missing and answered
``unauthorized``; nothing else happens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cbor2

from agent import cbor
from agent.auth import cose
from agent.auth.envelope import REPLY_KEY, CommandBody, decode_body
from agent.auth.principals import Principal, PrincipalStore
from agent.auth.roles import CommandPolicy
from agent.errors import BadDataError, DecodeError, PolicyError
from agent.ports import AuditSink

MAX_COMMAND_DEPTH = 8
# Anyone on the broker can send refused commands: audit at most this many a
# minute and count the rest, so a flood cannot fill the disk through the audit log.
AUDITED_REFUSALS_PER_MINUTE = 60


class UnauthorizedError(PolicyError):
    def __init__(self, command: str, missing: str, reason: str) -> None:
        self.command = command
        self.missing = missing
        self.reason = reason
        super().__init__(f"{command} needs a command signed by {missing}: {reason}")


@dataclasses.dataclass(frozen=True)
class Caller:
    principal: Principal | None = None
    # The signed command as checked (device, name, counter, time): what sealed
    # parameters are bound to (agent.sealedparams).  None for a public command.
    command: CommandBody | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def description(self) -> str:
        p = self.principal
        return "anonymous" if p is None else f"{p.role.value}:{p.kid.hex()[:16]}"


ANONYMOUS = Caller()


class CallerSlot:
    """Who gave the command being handled (for records such as consent history)."""

    def __init__(self) -> None:
        self.current = ANONYMOUS

    def describe(self, channel: str) -> str:
        return f"{channel}:{self.current.description}"


@dataclasses.dataclass(frozen=True)
class Authorised:
    caller: Caller
    args: dict[str, object]
    reply_key: bytes | None = None


class Authoriser:
    def __init__(
        self,
        store: PrincipalStore,
        policy: CommandPolicy,
        *,
        max_bytes: int,
        max_skew_seconds: float,
        audit: AuditSink | None = None,
        device_id: Callable[[], str] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.max_bytes = max_bytes
        self.max_skew = max_skew_seconds
        self.audit = audit
        self._device_id = device_id or (lambda: store.device_id)
        self.refused = 0
        self.audited_per_minute = AUDITED_REFUSALS_PER_MINUTE
        self._audit_minute = -1
        self._audited_this_minute = 0
        self._suppressed = 0

    def authorise(self, name: str, payload: bytes, now: float) -> Authorised:
        """The caller and arguments of a command allowed to run; raises otherwise.

        Raises :class:`UnauthorizedError` (audited) or, for bytes that are not
        a command at all, :class:`~agent.errors.DecodeError`.
        """
        item = cbor.loads_untrusted(
            payload or b"\xa0", max_bytes=self.max_bytes, max_depth=MAX_COMMAND_DEPTH
        )
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise DecodeError("arguments must be a CBOR map with text keys")
            if self.policy.is_public(name):
                return Authorised(ANONYMOUS, item)
            raise self._refuse(name, None, "the command is not signed", now)
        if not isinstance(item, cbor2.CBORTag):
            raise DecodeError("a command is a CBOR map or a COSE_Sign1")
        message = cose.parse_sign1(item)
        principal = self.store.get(message.key_id)
        if principal is None:
            raise self._refuse(name, None, "the signing key is not trusted here", now)
        try:
            cose.verify_sign1(message, principal.public_key)
        except BadDataError:
            raise self._refuse(name, principal, "the signature does not verify", now) from None
        body = decode_body(message.payload, max_bytes=self.max_bytes, max_depth=MAX_COMMAND_DEPTH)
        if body.device_id != self._device_id():
            raise self._refuse(name, principal, "it was signed for another device", now)
        if body.name != name:
            raise self._refuse(name, principal, "it was signed for another command", now)
        if abs(body.timestamp - now) > self.max_skew:
            raise self._refuse(name, principal, "its timestamp is outside the window", now)
        if not self.policy.allows(name, principal.role):
            raise self._refuse(name, principal, f"role {principal.role.value} may not", now)
        reply_key = body.args.pop(REPLY_KEY, None)
        if reply_key is not None and (not isinstance(reply_key, bytes) or len(reply_key) != 32):
            raise DecodeError("reply_key must be a 32-byte X25519 public key")
        if not self.store.advance_counter(principal.kid, body.counter):
            raise self._refuse(name, principal, "it is a replay (counter not above the last)", now)
        # The caller keeps the signed fields, not the arguments (they may hold a secret).
        signed = dataclasses.replace(body, args={})
        return Authorised(Caller(principal, signed), body.args, reply_key)

    def _refuse(
        self, name: str, principal: Principal | None, reason: str, now: float
    ) -> UnauthorizedError:
        self.refused += 1
        missing = self.policy.describe(name)
        if self.audit is not None and self._may_audit(now):
            self.audit.record(
                "command.refused",
                {
                    "command": name[:64],
                    "missing_role": missing,
                    "signer": Caller(principal).description,
                    "reason": reason,
                },
                now,
            )
        return UnauthorizedError(name, missing, reason)

    def _may_audit(self, now: float) -> bool:
        assert self.audit is not None
        minute = int(now // 60)
        if minute != self._audit_minute:
            if self._suppressed:
                self.audit.record("command.refused.suppressed", {"count": self._suppressed}, now)
            self._audit_minute, self._audited_this_minute, self._suppressed = minute, 0, 0
        if self._audited_this_minute >= self.audited_per_minute:
            self._suppressed += 1
            return False
        self._audited_this_minute += 1
        return True
