"""``data.export`` and ``data.erase``: the device's side of access and erasure requests.

Both are MQTT command handlers (Mapping args -> Mapping reply) built by the
composition root with everything injected: the registry of stores, the device
key that signs replies, the audit log (a sink, and the trail the export
includes), a clock and the list of retained MQTT topics that carry personal
data.  The erase reply returns that list so the publisher can clear each topic
with an empty retained message.

The export is one zip archive (``agent.rights.export``, ``docs/export-format.md``).
Over MQTT it travels sealed to the requester (``confidential_commands``); a reply
larger than ``max_reply_bytes`` leaves the files out (the JSON still names each
one, marked omitted) and, if even that is too large, the request fails with
``too_large``: ``edge-agent data export`` on the device has no such cap.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from agent import cbor
from agent.errors import DecodeError, EdgeAgentError, TooLargeError
from agent.logs import codes
from agent.ports import AuditSink, Clock, CommandArgs, CommandResult, Resealable
from agent.rights.export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    LOG_SELECTION,
    AuditReader,
    Export,
    LineSource,
    audit_section,
    decode_queued,
    enrolment_dates,
    identifiers,
    iso,
    lines_about,
)
from agent.rights.registry import ALL_KEY_DOMAINS, DataRegistry, ErasureScope, key_domains
from agent.rights.signing import sign_reply

if TYPE_CHECKING:
    from agent.keystore import DataKeys

log = logging.getLogger(__name__)

MAX_CORRELATION_CHARS = 128
# The largest export reply sent over MQTT: brokers commonly cap a message at a few MiB.
MAX_REPLY_BYTES = 8 * 1024 * 1024
FORMATS = ("zip", "json", "cbor")


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


def _no_generations() -> Mapping[str, int]:
    return {}


class RightsHandlers:
    def __init__(
        self,
        registry: DataRegistry,
        *,
        device_key: bytes,
        clock: Clock,
        audit: AuditSink | None = None,
        audit_trail: AuditReader | None = None,
        retained_topics: Callable[[], Sequence[str]] = tuple,
        generations: Callable[[], Mapping[str, int]] = _no_generations,
        max_reply_bytes: int | None = MAX_REPLY_BYTES,
        keys: DataKeys | None = None,
    ) -> None:
        self._registry = registry
        # An erasure destroys the data keys of its scopes before any store purges.
        self._keys = keys
        self._device_key = device_key
        self._clock = clock
        self._audit = audit
        self._trail = audit_trail
        self._retained_topics = retained_topics
        # The pseudonym key generation of each purpose in use: an erasure retires them.
        self._generations = generations
        self._max_reply_bytes = max_reply_bytes

    def build_export(self, now: float) -> Export:
        """Every holder's data made readable, the log lines about it, the audit trail."""
        export = Export({})
        sections: dict[str, object] = {}
        failures: dict[str, str] = {}
        trail = self._trail.entries() if self._trail is not None else []
        for entry in self._registry.holders:
            name = entry.holder.name
            try:
                raw = dict(entry.holder.export_personal_data())
            except EdgeAgentError as exc:
                log.error("export from %s failed: %s", name, exc,
                          extra=codes.HOLDER_FAILED.extra())
                failures[name] = type(exc).__name__
                continue
            section = decode_queued(export, raw) if "queued_events" in raw else (
                export.readable(name, raw)
            )
            sections[name] = enrolment_dates(section, trail)
        # Last: which lines are about the subject depends on what the others hold.
        names = identifiers(sections)
        for entry in self._registry.holders:
            holder = entry.holder
            if isinstance(holder, LineSource) and holder.name in sections:
                try:
                    lines, matched = lines_about(holder.iter_lines(), names)
                except EdgeAgentError as exc:
                    failures[holder.name] = type(exc).__name__
                    continue
                section = sections[holder.name]
                sections[holder.name] = {
                    **(section if isinstance(section, dict) else {}),
                    "lines_about_subject": export.readable(holder.name, lines),
                    "lines_matched": matched,
                    "selection": LOG_SELECTION,
                }
        document: dict[str, object] = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "created_at": iso(now),
            "complete": not failures,
            "failed": failures,
            "holders": sections,
            "documentation": "docs/export-format.md",
        }
        if self._trail is not None:
            document["audit"] = audit_section(self._trail)
        export.document = document
        return export

    def data_export(self, args: CommandArgs) -> CommandResult:
        fmt = args.get("format", "zip")
        if fmt not in FORMATS:
            raise DecodeError(f"format must be one of {', '.join(FORMATS)}, not {str(fmt)[:10]!r}")
        correlation_id = _correlation(args)
        now = self._clock.now()
        export = self.build_export(now)
        # json and cbor: the document alone (cbor for clients that decode CBOR anyway).
        omitted = fmt != "zip"
        if fmt == "cbor":
            data = cbor.dumps(export.without_files().document)
        else:
            data = export.without_files().json_bytes() if omitted else export.archive()
        cap = self._max_reply_bytes
        if cap is not None and len(data) > cap and not omitted:
            omitted = True
            data = export.archive(with_files=False)
        if cap is not None and len(data) > cap:
            raise TooLargeError(
                f"the export is {len(data)} bytes even without its files, more than a reply "
                f"may carry ({cap}); run `edge-agent data export` on the device"
            )
        failed = export.document["failed"]
        assert isinstance(failed, dict)
        if self._audit is not None:
            self._audit.record(
                "data.export",
                {"holders": sorted(h.holder.name for h in self._registry.holders),
                 "bytes": len(data), "format": fmt, "failed": sorted(failed),
                 "files": 0 if omitted else len(export.files), "files_omitted": omitted},
                now,
            )
        reply: dict[str, object] = {
            "command": "data.export",
            "correlation_id": correlation_id,
            "completed_at": now,
            "format": fmt,
            "data": data.decode("utf-8") if fmt == "json" else data,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "files_omitted": omitted,
            "complete": not failed,
        }
        audit = export.document.get("audit")
        if isinstance(audit, dict):
            reply["audit_head"] = audit["head"]
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
        # Before erasing: the ledger's erasure moves every purpose to a new generation.
        retired = dict(self._generations())
        erased, failed = self.erase_scopes(scopes)
        topics = sorted(set(self._retained_topics()))
        if self._audit is not None:
            self._audit.record(
                "account.cancel" if account else "data.erase",
                {"erased": erased, "failed": failed,
                 "scopes": sorted(s.value for s in scopes), "retained_topics": len(topics),
                 # Read by the tombstone notices: which pseudonym generations ended here.
                 "retired_generations": retired},
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

    def erase_scopes(self, scopes: set[ErasureScope]) -> tuple[dict[str, int], list[str]]:
        """Destroy the scopes' data keys (intent first), then purge every holder in them."""
        intent: dict[str, object] = {"erase": sorted(s.value for s in scopes)}
        erased: dict[str, int] = {}
        for entry in self._registry.holders:
            # What a holder must read before its key goes (the SSID the Wi-Fi backend
            # needs to forget the network); nothing is erased yet.
            prepare = getattr(entry.holder, "prepare_erasure", None)
            if entry.scope in scopes and callable(prepare):
                try:
                    prepare()
                except EdgeAgentError as exc:
                    log.warning("preparing the erasure of %s: %s", entry.holder.name, exc)
        if self._keys is not None:
            self._keys.begin(intent)
            erased["data_keys"] = sum(
                self._keys.destroy(domain) for scope in scopes for domain in key_domains(scope)
            )
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
        if self._keys is not None:
            # Settled even if a store failed: its leftovers are sealed under keys that
            # are gone, and redoing the erasure at every start would destroy new data.
            self._keys.settle(intent)
        return erased, failed

    def resume_erasures(self) -> int:
        """At start: carry out again every erasure a kill interrupted (it is idempotent)."""
        if self._keys is None:
            return 0
        resumed = 0
        for intent in self._keys.intents():
            names = intent.get("erase")
            if not isinstance(names, list):
                continue
            scopes = {s for s in ErasureScope if s.value in names}
            log.warning("finishing the interrupted erasure of %s", ", ".join(sorted(names)))
            self.erase_scopes(scopes)
            self._keys.settle(intent)  # the old spelling, if a scope is no longer known
            resumed += 1
        return resumed

    # --- key rotation -------------------------------------------------------------

    def _reseal_all(self) -> tuple[int, list[str]]:
        resealed, failed = 0, []
        for entry in self._registry.holders:
            holder = entry.holder
            if not isinstance(holder, Resealable):
                continue
            try:
                resealed += holder.reseal_personal_data()
            except EdgeAgentError as exc:
                log.error("resealing %s failed: %s", holder.name, exc,
                          extra=codes.HOLDER_FAILED.extra())
                failed.append(holder.name)
        return resealed, failed

    def rotate(self, domains: Sequence[str]) -> dict[str, object]:
        """New data keys for ``domains``; every store reseals; only then the old keys go.

        A kill at any step leaves the old key beside the new one: the next start
        (:meth:`finish_rotations`) reseals and retires; no key is destroyed while a
        store still holds data under it.
        """
        if self._keys is None:
            return {"rotated": [], "resealed": 0, "retired": 0, "failed": []}
        keys = self._keys
        rotated = [d for d in domains if keys.live_numbers(d)]
        for domain in rotated:
            keys.rotate(domain)
        resealed, failed = self._reseal_all()
        if not failed:
            # A second pass: anything sealed under an old key while the first ran.
            again, failed = self._reseal_all()
            resealed += again
        retired = 0 if failed else sum(keys.retire_older(d) for d in rotated)
        return {"rotated": rotated, "resealed": resealed, "retired": retired, "failed": failed}

    def finish_rotations(self) -> int:
        """At start: a domain with two live keys is a rotation a kill interrupted."""
        if self._keys is None:
            return 0
        pending = [d for d in ALL_KEY_DOMAINS if len(self._keys.live_numbers(d)) > 1]
        if not pending:
            return 0
        log.warning("finishing the interrupted key rotation of %s", ", ".join(pending))
        _, failed = self._reseal_all()
        if failed:
            return 0
        return sum(self._keys.retire_older(d) for d in pending)

    def data_rotate_keys(self, args: CommandArgs) -> CommandResult:
        requested = args.get("domains", list(ALL_KEY_DOMAINS))
        if not isinstance(requested, list) or not all(
            isinstance(d, str) and d in ALL_KEY_DOMAINS for d in requested
        ):
            raise DecodeError(f"domains must be a list drawn from {', '.join(ALL_KEY_DOMAINS)}")
        now = self._clock.now()
        result = self.rotate([str(d) for d in requested])
        if self._audit is not None:
            self._audit.record("data.rotate_keys", result, now)
        return {"command": "data.rotate_keys", "completed_at": now, **result}
