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

JSON (README "Commands in JSON"): a payload with content type
``application/json`` -- or, without a content type, one whose first
non-blank byte is ``{`` or ``[`` -- is a JSON object.  ``{"cose": "<base64>"}`` carries
the very COSE_Sign1 bytes a CBOR client would send (the signature covers
them, not the JSON around them); any other keys but the two below are the
arguments of a public command (``status`` takes ``{}``).
``response_topic`` (under ``<prefix>/<device id>/reply/``) names the reply
topic for clients without MQTT v5 properties (MQTT v3.1.1: Node-RED's and
Home Assistant's defaults) and ``correlation_id`` (text) is echoed in the
reply.  The reply is the same map in JSON (bytes as base64 text).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping

from agent import cbor, jsonform
from agent.auth import cose, envelope
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


JSON_COSE = "cose"
JSON_RESPONSE_TOPIC = "response_topic"
JSON_CORRELATION = "correlation_id"
MAX_JSON_DEPTH = 8
MAX_CORRELATION_CHARS = 128


@dataclasses.dataclass(frozen=True)
class Request:
    """A command payload as received, unwrapped to what the authoriser reads.

    ``body`` is CBOR (a map of arguments or a COSE_Sign1); ``json``: the
    request came as JSON and its reply goes back as JSON; ``error``: the bytes
    were not a command at all (answered ``bad_request``, nothing runs).
    """

    body: bytes
    json: bool = False
    response_topic: str | None = None
    correlation_id: str | None = None
    error: str | None = None

    @property
    def content_type(self) -> str:
        return jsonform.JSON_CONTENT_TYPE if self.json else jsonform.CBOR_CONTENT_TYPE


def is_json(payload: bytes, content_type: str | None) -> bool:
    """JSON by content type; without one (MQTT v3.1.1), by the first non-blank byte."""
    if content_type:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == jsonform.JSON_CONTENT_TYPE or kind.endswith("+json"):
            return True
        if kind in (jsonform.CBOR_CONTENT_TYPE, "application/cose"):
            return False
    # A CBOR command is a map or a tagged COSE_Sign1, never the text or byte string
    # that 0x7b ("{") or 0x5b ("[") would start.
    return payload.lstrip(b" \t\r\n")[:1] in (b"{", b"[")


def decode_request(payload: bytes, content_type: str | None, *, max_bytes: int) -> Request:
    """Unwrap a payload in either format; never raises (``Request.error`` says why)."""
    if not is_json(payload, content_type):
        return Request(payload)
    try:
        item = jsonform.loads_untrusted(payload, max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH)
        if not isinstance(item, dict):
            raise DecodeError("a JSON command is an object")
        topic = item.pop(JSON_RESPONSE_TOPIC, None)
        correlation = item.pop(JSON_CORRELATION, None)
        if topic is not None and not isinstance(topic, str):
            raise DecodeError(f"{JSON_RESPONSE_TOPIC} must be text")
        if correlation is not None and (
            not isinstance(correlation, str) or len(correlation) > MAX_CORRELATION_CHARS
        ):
            raise DecodeError(f"{JSON_CORRELATION} must be text of at most 128 characters")
    except DecodeError as exc:
        return Request(b"", json=True, error=str(exc))
    try:
        if JSON_COSE in item:
            signed = item.pop(JSON_COSE)
            if item:
                raise DecodeError(
                    f"a signed JSON command carries only {JSON_COSE!r}, "
                    f"{JSON_RESPONSE_TOPIC!r} and {JSON_CORRELATION!r}"
                )
            body = envelope.from_json_carriage(signed)
        else:
            body = cbor.dumps(item)
    except DecodeError as exc:
        return Request(
            b"", json=True, response_topic=topic, correlation_id=correlation, error=str(exc)
        )
    return Request(body, json=True, response_topic=topic, correlation_id=correlation)


@dataclasses.dataclass(frozen=True)
class Handled:
    reply: bytes
    events: tuple[Event, ...] = ()
    clear_retained: tuple[str, ...] = ()
    content_type: str = jsonform.CBOR_CONTENT_TYPE


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

    def decode(self, payload: bytes, content_type: str | None = None) -> Request:
        return decode_request(payload, content_type, max_bytes=self.authoriser.max_bytes)

    def handle(
        self, name: str, payload: bytes, now: float, *, request: Request | None = None
    ) -> Handled:
        """Decode, dispatch and encode the reply; never raises.

        ``request``: the payload already unwrapped by :meth:`decode` (JSON or
        CBOR); without it, ``payload`` is read by its first byte.  The events
        the command produced come back beside the reply: the caller commits
        them before it sends the reply.
        """
        self.handled += 1
        if request is None:
            request = self.decode(payload)
        if request.error is not None:
            reply, outcome = _error("bad_request", request.error), _NOTHING
        else:
            reply, outcome = self._dispatch(name, request.body, now)
        if not reply.get("ok"):
            self.failed += 1
        return Handled(
            encode_reply(reply, request),
            outcome.events,
            outcome.clear_retained,
            request.content_type,
        )

    def refuse(self, request: Request, code: str, message: str) -> Handled:
        """An error reply in the request's format (nothing ran)."""
        self.failed += 1
        return Handled(encode_reply(_error(code, message), request), (), (), request.content_type)

    def _dispatch(self, name: str, payload: bytes, now: float) -> tuple[dict[str, object], Outcome]:
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


def encode_reply(reply: Mapping[str, object], request: Request) -> bytes:
    if not request.json:
        return cbor.dumps(dict(reply))
    if request.correlation_id is not None:
        reply = {**reply, JSON_CORRELATION: request.correlation_id}
    return jsonform.dumps(reply)


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
