"""Notices to receivers: tombstones after withdrawals and erasures, and the audit chain's head.

**Tombstones.**  Whoever received a purpose's events must learn when the owner
withdrew that purpose or erased their data, so they can delete their copies.
A ``privacy.tombstone`` event says which purpose, what scope, when, and which
pseudonym generation was retired -- with ``retired_dev``, the ``dev`` value
every event of that generation carried, so a receiver can find exactly the
records it must drop.  Tombstones carry no personal data and belong to
``device_operation``, the purpose that needs no consent: a notice about a
withdrawal must pass the consent door of the purpose it withdraws.

The notices come from the audit trail (``consent.withdraw``, ``data.erase``,
``account.cancel``), which every path writes -- an MQTT command, the CLI in
another process, a withdrawal made while the agent was stopped.  The service
remembers how far it got in ``StateLayout.privacy_notices`` and moves that
mark only on the tick after the events were queued (the runtime commits each
tick's events to the outbox before the next), so a crash repeats a notice
rather than losing it; the ``notice`` field is stable, receivers drop repeats
by it.  The latest tombstone of each purpose is also kept for a retained MQTT
message (``<base>/tombstones/<purpose>``), so a receiver that subscribes later
still learns of it.

**Audit head.**  ``audit.head`` publishes the index and MAC of the audit
chain's newest entry every ``privacy.audit_head_interval_seconds`` when it
moved: receivers keep them, and ``edge-agent audit verify --index N --head
HEX`` or an export shows a chain cut short or recomputed since.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from agent import cbor
from agent.atomicfile import read_optional, write_atomic
from agent.audit import CHAIN, AuditEntry, AuditHead
from agent.errors import EdgeAgentError
from agent.events import SCHEMA_VERSION, Event, schema
from agent.purposes import CONSENTABLE, Purpose
from agent.rights.export import iso

log = logging.getLogger(__name__)

TOMBSTONE = schema(
    "privacy.tombstone",
    Purpose.DEVICE_OPERATION,
    ("notice", "reason", "data_purpose", "scope", "at", "generation", "retired_dev"),
)
AUDIT_HEAD = schema("audit.head", Purpose.DEVICE_OPERATION, ("index", "head", "chain", "entries"))
NOTICE_KINDS = ("consent.withdraw", "data.erase", "account.cancel")
RETAINED_PREFIX = "tombstones"
BATCH = 64
MAX_STATE_BYTES = 256 * 1024

DevPseudonym = Callable[[Purpose, int], str]


class NoticeSource(Protocol):
    """The part of the audit log the notices read (:class:`agent.audit.AuditLog`)."""

    def entries_after(self, index: int, kinds: Iterable[str], limit: int = ...) -> list[AuditEntry]:
        ...

    def head(self) -> AuditHead: ...


def tombstones(entry: AuditEntry, dev_pseudonym: DevPseudonym | None) -> list[dict[str, object]]:
    """The tombstone fields one audit entry calls for (one per purpose it ended)."""
    detail = entry.detail
    if entry.kind == "consent.withdraw":
        try:
            purposes = [Purpose.parse(detail.get("purpose"))]
        except Exception:
            return []
        scope = ["purpose"]
        generation = detail.get("retired_generation")
        generations = {purposes[0].value: generation} if isinstance(generation, int) else {}
        reason = "withdrawal"
    else:
        purposes = list(CONSENTABLE)
        scopes = detail.get("scopes")
        scope = [str(s) for s in scopes] if isinstance(scopes, list) else ["personal"]
        found = detail.get("retired_generations")
        generations = dict(found) if isinstance(found, dict) else {}
        reason = "account_cancellation" if entry.kind == "account.cancel" else "erasure"
    notices: list[dict[str, object]] = []
    for purpose in purposes:
        generation = generations.get(purpose.value)
        generation = generation if isinstance(generation, int) and generation >= 0 else None
        retired_dev = None
        if generation is not None and dev_pseudonym is not None:
            retired_dev = dev_pseudonym(purpose, generation)
        notices.append({
            # The entry's MAC is unique for the life of the chain: a stable id for repeats.
            "notice": f"{entry.hash.hex()[:16]}-{purpose.value}",
            "reason": reason,
            "data_purpose": purpose.value,
            "scope": scope,
            "at": iso(entry.at),
            "generation": generation,
            "retired_dev": retired_dev,
        })
    return notices


def retained_payload(fields: Mapping[str, object], at: float) -> bytes:
    """A tombstone as a retained message: the event's shape, its notice as the id."""
    return cbor.dumps({
        "v": SCHEMA_VERSION,
        "id": fields["notice"],
        "type": TOMBSTONE.type,
        "purpose": TOMBSTONE.purpose.value,
        "ts": int(at),
        "f": dict(fields),
    })


class NoticeService:
    """Tombstones from new withdrawal and erasure entries of the audit trail; the audit head.

    One service, one state file (``StateLayout.privacy_notices``): how far the
    trail was read, the latest tombstone per purpose, and when the head was
    last published -- kept across restarts, so a device that restarts more
    often than the head interval still publishes it.
    """

    name = "privacy-notices"

    def __init__(
        self,
        audit: NoticeSource,
        state_path: pathlib.Path,
        *,
        dev_pseudonym: DevPseudonym | None = None,
        head_interval_seconds: float | None = None,
    ) -> None:
        self._audit = audit
        self._path = state_path
        self._dev = dev_pseudonym
        self._head_interval = head_interval_seconds
        self._done = -1
        self._pending: int | None = None
        self._retained: dict[str, dict[str, object]] = {}
        self._retained_at: dict[str, float] = {}
        self._head_index = -1
        self._head_at: float | None = None
        self._dirty = False
        # Changes whenever the retained set does: the runtime republishes then.
        self.version = 0

    def start(self) -> None:
        self._load()

    def _load(self) -> None:
        try:
            raw = read_optional(self._path, MAX_STATE_BYTES)
            state = json.loads(raw) if raw else {}
        except (ValueError, EdgeAgentError) as exc:
            # Starting over repeats notices (receivers drop repeats); losing them would not do.
            log.warning("privacy notice state unreadable (%s): starting from the beginning", exc)
            state = {}
        if not isinstance(state, dict):
            state = {}
        done = state.get("audit_index", -1)
        self._done = done if isinstance(done, int) else -1
        retained = state.get("retained", {})
        for purpose, item in retained.items() if isinstance(retained, dict) else ():
            if isinstance(item, dict) and isinstance(item.get("fields"), dict):
                at = item.get("ts", 0)
                self._retained[str(purpose)] = dict(item["fields"])
                self._retained_at[str(purpose)] = float(at) if isinstance(at, int | float) else 0.0
        head = state.get("head", {})
        if isinstance(head, dict):
            index, at = head.get("index", -1), head.get("at")
            self._head_index = index if isinstance(index, int) else -1
            self._head_at = float(at) if isinstance(at, int | float) else None
        self.version += 1

    def _save(self) -> None:
        retained = {
            p: {"fields": f, "ts": self._retained_at.get(p, 0.0)} for p, f in self._retained.items()
        }
        body = {
            "v": 1,
            "audit_index": self._done,
            "retained": retained,
            "head": {"index": self._head_index, "at": self._head_at},
        }
        write_atomic(self._path, json.dumps(body, sort_keys=True).encode())
        self._dirty = False

    def tick(self, now: float) -> Sequence[Event]:
        if self._pending is not None:
            # Last tick's events are in the outbox now: move the mark past them.
            self._done, self._pending = self._pending, None
            self._dirty = True
        if self._dirty:
            self._save()
        events = [*self._tombstones(), *self._head(now)]
        return events

    def _tombstones(self) -> list[Event]:
        head = self._audit.head().index
        entries = [
            e for e in self._audit.entries_after(self._done, NOTICE_KINDS, BATCH)
            if e.index <= head
        ]
        if not entries:
            # Skip what holds no notice, so each tick's query starts near the head. Kept in
            # memory (saved with the next notice or at stop): re-reading after a crash is
            # only slower.
            self._done = max(self._done, head)
            return []
        events: list[Event] = []
        for entry in entries:
            for fields in tombstones(entry, self._dev):
                events.append(Event(TOMBSTONE.type, occurred_at=entry.at, fields=fields))
                purpose = str(fields["data_purpose"])
                self._retained[purpose] = fields
                self._retained_at[purpose] = entry.at
        self.version += 1
        self._pending = entries[-1].index
        log.info("publishing %d privacy tombstone(s)", len(events))
        return events

    def _head(self, now: float) -> list[Event]:
        if self._head_interval is None:
            return []
        if self._head_at is None:
            # A new device: the first head one interval from now, not at every start.
            self._head_at = now
            self._dirty = True
            return []
        if now < self._head_at + self._head_interval:
            return []
        head = self._audit.head()
        self._head_at = now
        self._dirty = True
        if head.index < 0 or head.index == self._head_index:
            return []
        self._head_index = head.index
        return [Event(AUDIT_HEAD.type, occurred_at=now, fields={
            "index": head.index, "head": head.mac.hex(), "chain": CHAIN, "entries": head.entries,
        })]

    def retained_messages(self) -> dict[str, bytes]:
        """``{topic under the device's base: payload}``, one per purpose with a tombstone."""
        return {
            f"{RETAINED_PREFIX}/{purpose}": retained_payload(fields, self._retained_at[purpose])
            for purpose, fields in sorted(self._retained.items())
        }

    def stop(self) -> None:
        # stop() runs before the runtime's last flush: the mark stays where it was and
        # the next start repeats the last few notices rather than risk losing them.
        if self._pending is None:
            try:
                self._save()
            except EdgeAgentError as exc:
                log.warning("could not save the privacy notice state: %s", exc)
        self._pending = None
