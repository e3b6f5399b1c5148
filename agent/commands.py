"""Request/response commands arriving over MQTT.

A command is published to ``<prefix>/<device id>/cmd/<name>`` with the MQTT v5
``ResponseTopic`` (under ``<prefix>/<device id>/reply/``) and
``CorrelationData`` properties.  Its payload is a signed command
(:mod:`agent.auth.envelope`); only public commands (``status``) may be a bare
CBOR map of arguments.  The :class:`~agent.auth.authoriser.Authoriser` decides
before any handler runs.  The reply is a CBOR map ``{"ok": true, "result":
{...}}`` (``{"ok": true, "sealed": <COSE_Encrypt>}`` when the command carried
a reply key) or ``{"ok": false, "error": {"code": ..., "message": ...}}``.
Nothing a sender does -- oversized, malformed, deeply nested, unsigned,
replayed, unknown command, a handler that blows up -- gets past
:meth:`CommandRouter.handle` as an exception.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping

from agent import cbor
from agent.auth import cose
from agent.auth.authoriser import ANONYMOUS, Authoriser, CallerSlot, UnauthorizedError
from agent.consent import ConsentLedger
from agent.errors import (
    BadDataError,
    ConsentRequiredError,
    DecodeError,
    NotFoundError,
    PolicyError,
    TooLargeError,
    TransportError,
)
from agent.events import Event
from agent.ports import Clock, CommandArgs, CommandHandler, CommandResult, Outcome
from agent.purposes import Purpose

log = logging.getLogger(__name__)

COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}$")
MAX_ERROR_TEXT = 300


_NOTHING = Outcome({})


@dataclasses.dataclass(frozen=True)
class Handled:
    reply: bytes
    events: tuple[Event, ...] = ()
    clear_retained: tuple[str, ...] = ()


def _error(code: str, message: str) -> dict[str, object]:
    return {"ok": False, "error": {"code": code, "message": message[:MAX_ERROR_TEXT]}}


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, UnauthorizedError):
        return "unauthorized"
    if isinstance(exc, TooLargeError):
        return "too_large"
    if isinstance(exc, ConsentRequiredError):
        return "consent_required"
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, PolicyError):
        return "forbidden"
    if isinstance(exc, BadDataError):
        return "bad_request"
    if isinstance(exc, TransportError):
        return "unavailable"
    return "internal"


class CommandRouter:
    def __init__(
        self,
        authoriser: Authoriser,
        *,
        callers: CallerSlot | None = None,
        confidential: frozenset[str] = frozenset(),
    ) -> None:
        self.authoriser = authoriser
        self.callers = callers or CallerSlot()
        # Commands whose result may only travel sealed to the requester.
        self.confidential = confidential
        self._handlers: dict[str, CommandHandler] = {}
        self.handled = 0
        self.failed = 0

    def register(self, name: str, handler: CommandHandler) -> None:
        if not COMMAND_NAME.match(name):
            raise ValueError(f"bad command name {name!r}")
        if name in self._handlers:
            raise ValueError(f"command {name!r} registered twice")
        self._handlers[name] = handler

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def handle(self, name: str, payload: bytes, now: float) -> Handled:
        """Decode, dispatch and encode the reply; never raises.

        The events the command produced come back beside the reply: the caller
        commits them before it sends the reply.
        """
        self.handled += 1
        reply, outcome = self._dispatch(name, payload, now)
        if not reply.get("ok"):
            self.failed += 1
        return Handled(cbor.dumps(reply), outcome.events, outcome.clear_retained)

    def _dispatch(
        self, name: str, payload: bytes, now: float
    ) -> tuple[dict[str, object], Outcome]:
        handler = self._handlers.get(name) if COMMAND_NAME.match(name) else None
        if handler is None:
            return _error("unknown_command", f"unknown command {name[:64]!r}"), _NOTHING
        try:
            authorised = self.authoriser.authorise(name, payload, now)
            if name in self.confidential and authorised.reply_key is None:
                raise DecodeError(f"{name} needs a reply_key: its result travels only sealed")
            self.callers.current = authorised.caller
            try:
                result = handler(authorised.args)
            finally:
                self.callers.current = ANONYMOUS
            outcome = result if isinstance(result, Outcome) else Outcome(result)
            if authorised.reply_key is not None:
                sealed = cose.seal(authorised.reply_key, cbor.dumps(dict(outcome.result)))
                return {"ok": True, "sealed": sealed}, outcome
            return {"ok": True, "result": dict(outcome.result)}, outcome
        except Exception as exc:
            code = _error_code(exc)
            if code == "internal":
                log.exception("command %s failed", name)
                return _error(code, "internal error"), _NOTHING
            return _error(code, str(exc)), _NOTHING


def require_str(args: CommandArgs, key: str, *, max_len: int = 256) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise DecodeError(f"argument {key!r} must be a text string of 1..{max_len} characters")
    return value


def require_bool(args: CommandArgs, key: str) -> bool:
    value = args.get(key)
    if not isinstance(value, bool):
        raise DecodeError(f"argument {key!r} must be true or false")
    return value


def consent_commands(
    ledger: ConsentLedger, clock: Clock, callers: CallerSlot
) -> dict[str, CommandHandler]:
    def consent_set(args: CommandArgs) -> CommandResult:
        purpose = Purpose.parse(require_str(args, "purpose", max_len=64))
        granted = require_bool(args, "granted")
        change = ledger.set(purpose, granted, clock.now(), source=callers.describe("mqtt"))
        return {
            "purpose": purpose.value,
            "granted": change.granted,
            "changed": change.changed,
            "purged": dict(change.purged),
            "policy_version": ledger.policy_version,
        }

    def consent_get(args: CommandArgs) -> CommandResult:
        return {"consent": ledger.snapshot(), "policy_version": ledger.policy_version}

    return {"consent.set": consent_set, "consent.get": consent_get}


def status_command(collect: Callable[[], Mapping[str, object]]) -> CommandHandler:
    def status(args: CommandArgs) -> CommandResult:
        return dict(collect())

    return status
