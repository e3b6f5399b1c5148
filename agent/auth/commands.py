"""The owner's commands over the keys the device obeys (all owner-only).

``auth.grant {role, public_key, label}`` trusts another key for one role
(an installer, a technician, a recogniser); ``auth.revoke {kid}`` forgets it;
``auth.list`` names them; ``auth.unbind`` forgets every key and gives the
device a fresh id, so the next installer can bind it.
"""

from __future__ import annotations

from agent.auth.authoriser import CallerSlot
from agent.auth.principals import PrincipalStore
from agent.auth.roles import Role
from agent.errors import DecodeError, NotFoundError, PolicyError
from agent.ports import Clock, CommandArgs, CommandHandler, CommandResult


def _text(args: CommandArgs, key: str, max_len: int) -> str:
    value = args.get(key, "")
    if not isinstance(value, str) or len(value) > max_len:
        raise DecodeError(f"argument {key!r} must be text of at most {max_len} characters")
    return value


def auth_commands(
    store: PrincipalStore, clock: Clock, callers: CallerSlot
) -> dict[str, CommandHandler]:
    def grant(args: CommandArgs) -> CommandResult:
        try:
            role = Role.parse(_text(args, "role", 32))
        except ValueError as exc:
            raise DecodeError(str(exc)) from None
        if role is Role.OWNER:
            raise PolicyError("a device has one owner; unbind and bind again to change it")
        public_key = args.get("public_key")
        if not isinstance(public_key, bytes):
            raise DecodeError("argument 'public_key' must be the raw 32-byte Ed25519 key")
        principal = store.add(
            role,
            public_key,
            _text(args, "label", 64),
            clock.now(),
            added_by=callers.describe("mqtt"),
        )
        return principal.describe()

    def revoke(args: CommandArgs) -> CommandResult:
        try:
            kid = bytes.fromhex(_text(args, "kid", 64))
        except ValueError:
            raise DecodeError("argument 'kid' must be hex") from None
        target = store.get(kid)
        if target is None:
            raise NotFoundError("no such key")
        if target.role is Role.OWNER:
            raise PolicyError("the owner's key is removed only by auth.unbind")
        store.remove(kid)
        return {"revoked": kid.hex()}

    def listing(args: CommandArgs) -> CommandResult:
        return {"principals": [p.describe() for p in store.principals()]}

    def unbind(args: CommandArgs) -> CommandResult:
        return {"unbound": True, "device_id": store.unbind()}

    return {"auth.grant": grant, "auth.revoke": revoke, "auth.list": listing, "auth.unbind": unbind}
