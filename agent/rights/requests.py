"""``data.export`` and ``data.erase``: the device's side of access and erasure requests.

Both are MQTT command handlers (Mapping args -> Mapping reply) built by the
composition root with everything injected: the registry of stores, the device
key that signs replies, the audit sink, a clock and the list of retained MQTT
topics that carry personal data.  The erase reply returns that list so the
publisher can clear each topic with an empty retained message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence

from agent import cbor
from agent.errors import DecodeError, EdgeAgentError
from agent.logs import codes
from agent.ports import AuditSink, Clock, CommandArgs, CommandResult
from agent.rights.registry import DataRegistry, ErasureScope
from agent.rights.signing import sign_reply

log = logging.getLogger(__name__)

EXPORT_FORMAT = "edge-agent-personal-data"
EXPORT_VERSION = 1
MAX_CORRELATION_CHARS = 128


def _correlation(args: CommandArgs) -> str | None:
    value = args.get("correlation_id")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CORRELATION_CHARS:
        raise DecodeError(f"correlation_id must be a string of at most {MAX_CORRELATION_CHARS}")
    return value


def _flag(args: CommandArgs, key: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise DecodeError(f"{key} must be true or false")
    return value


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot export a {type(value).__name__}")


def encode_export(document: Mapping[str, object], fmt: str) -> bytes:
    if fmt == "cbor":
        return cbor.dumps(dict(document))
    if fmt == "json":
        return json.dumps(
            document, default=_json_default, ensure_ascii=False, sort_keys=True, indent=1
        ).encode("utf-8")
    raise DecodeError(f"format must be 'json' or 'cbor', not {fmt[:10]!r}")


class RightsHandlers:
    def __init__(
        self,
        registry: DataRegistry,
        *,
        device_key: bytes,
        clock: Clock,
        audit: AuditSink | None = None,
        retained_topics: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self._registry = registry
        self._device_key = device_key
        self._clock = clock
        self._audit = audit
        self._retained_topics = retained_topics

    def export_document(self, now: float) -> dict[str, object]:
        holders: dict[str, object] = {}
        failures: dict[str, str] = {}
        for entry in self._registry.holders:
            try:
                holders[entry.holder.name] = dict(entry.holder.export_personal_data())
            except EdgeAgentError as exc:
                log.error("export from %s failed: %s", entry.holder.name, exc,
                          extra=codes.HOLDER_FAILED.extra())
                failures[entry.holder.name] = type(exc).__name__
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "created_at": now,
            "holders": holders,
            "failed": failures,
        }

    def data_export(self, args: CommandArgs) -> CommandResult:
        fmt = args.get("format", "cbor")
        if not isinstance(fmt, str):
            raise DecodeError("format must be a string")
        correlation_id = _correlation(args)
        now = self._clock.now()
        document = self.export_document(now)
        data = encode_export(document, fmt)
        failed = document["failed"]
        assert isinstance(failed, dict)
        if self._audit is not None:
            self._audit.record(
                "data.export",
                {"holders": sorted(h.holder.name for h in self._registry.holders),
                 "bytes": len(data), "format": fmt, "failed": sorted(failed)},
                now,
            )
        reply: dict[str, object] = {
            "command": "data.export",
            "correlation_id": correlation_id,
            "completed_at": now,
            "format": fmt,
            "data": data if fmt == "cbor" else data.decode("utf-8"),
            "sha256": hashlib.sha256(data).hexdigest(),
            "complete": not failed,
        }
        return sign_reply(reply, self._device_key)

    def data_erase(self, args: CommandArgs) -> CommandResult:
        correlation_id = _correlation(args)
        account = _flag(args, "account_cancellation", False)
        scopes = {ErasureScope.PERSONAL}
        if _flag(args, "wifi", account):
            scopes.add(ErasureScope.WIFI)
        if _flag(args, "binding", account):
            scopes.add(ErasureScope.BINDING)
        now = self._clock.now()
        erased: dict[str, int] = {}
        failed: list[str] = []
        for entry in self._registry.holders:
            if entry.scope not in scopes:
                continue
            try:
                erased[entry.holder.name] = entry.holder.erase_personal_data()
            except EdgeAgentError as exc:
                log.error("erasure in %s failed: %s", entry.holder.name, exc,
                          extra=codes.HOLDER_FAILED.extra())
                failed.append(entry.holder.name)
        topics = sorted(set(self._retained_topics()))
        if self._audit is not None:
            self._audit.record(
                "account.cancel" if account else "data.erase",
                {"erased": erased, "failed": failed,
                 "scopes": sorted(s.value for s in scopes), "retained_topics": len(topics)},
                now,
            )
        reply: dict[str, object] = {
            "command": "data.erase",
            "correlation_id": correlation_id,
            "completed_at": now,
            "account_cancellation": account,
            "scopes": sorted(s.value for s in scopes),
            "erased": erased,
            "failed": failed,
            "complete": not failed,
            "clear_retained_topics": topics,
        }
        return sign_reply(reply, self._device_key)
