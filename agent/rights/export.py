"""The data-subject export: one zip archive, a readable JSON document and the files it names.

Every holder exports plain structures (``PersonalDataHolder``); this module
turns them into what a person can read (``docs/export-format.md``):

* every time (``at``, ``ts``, ``*_at`` keys) becomes ISO 8601 UTC text;
* every byte string (a snapshot, an image inside a queued event) becomes a file
  of its own under ``files/<holder>/`` in the archive, named in the JSON by its
  archive path, size and SHA-256 -- no base64, no absolute path, no internal
  file (the gallery's vectors are never exported, only what they stand for);
* queued events are decoded from their wire CBOR;
* identities get their enrolment dates from the audit trail;
* the log section lists the stored (redacted) lines about the subject;
* the audit trail and its head are included, so whoever keeps the published
  ``audit.head`` events can tell a cut or recomputed chain (:mod:`agent.audit`).

The archive is built in memory: ``agent/`` writes no file here, the CLI and
the MQTT reply decide where the bytes go.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from agent import cbor
from agent.audit import CHAIN, AuditEntry, AuditHead
from agent.errors import DecodeError

EXPORT_FORMAT = "edge-agent-personal-data"
EXPORT_VERSION = 2
DOCUMENT_NAME = "export.json"
FILES_DIR = "files"
MAX_LOG_LINES = 5000
MAX_EVENT_BYTES = 32 * 1024 * 1024
# Redaction markers (agent.logs.redact) that stand for something about a person.
PERSONAL_MARKERS = tuple(
    f"[REDACTED:{kind}]"
    for kind in ("known", "name", "label", "person", "plate", "email", "phone", "ssid", "user")
)
GALLERY_KEEPS_NO_CROPS = (
    "the gallery keeps no face images: each enrolment photo is turned into a template "
    "vector on the device and the photo is not stored, so there are no face crops to export"
)
LOG_SELECTION = (
    "stored log lines (redacted when written) that carry a redacted personal value or "
    "name one of the identifiers in this export; newest last"
)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_IMAGE_TYPES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"))


@runtime_checkable
class LineSource(Protocol):
    """A holder whose stored lines can be read (the log store)."""

    def iter_lines(self) -> Iterator[str]: ...


class AuditReader(Protocol):
    def entries(self) -> list[AuditEntry]: ...

    def head(self) -> AuditHead: ...


def iso(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC text."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    text = moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


def _is_time_key(key: object) -> bool:
    return isinstance(key, str) and (key in {"at", "ts"} or key.endswith("_at"))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass
class Export:
    """The readable document and the files it refers to (archive path -> bytes)."""

    document: dict[str, object]
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def attach(self, holder: str, hint: str, data: bytes) -> dict[str, object]:
        """Keep ``data`` as a file of the archive; the reference that replaces it in the JSON."""
        name = _SAFE.sub("_", hint.rsplit("/", 1)[-1]).strip("._") or "item"
        if "." not in name:
            name += next((ext for magic, ext in _IMAGE_TYPES if data.startswith(magic)), ".bin")
        folder = f"{FILES_DIR}/{_SAFE.sub('_', holder) or 'holder'}"
        path, n = f"{folder}/{name}", 1
        while path in self.files:
            n += 1
            stem, dot, ext = name.rpartition(".")
            path = f"{folder}/{stem}-{n}{dot}{ext}"
        self.files[path] = data
        return {"file": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def readable(self, holder: str, value: object, hint: str = "item") -> object:
        """``value`` with times as ISO text and byte strings moved into files."""
        if isinstance(value, bytes | bytearray | memoryview):
            return self.attach(holder, hint, bytes(value))
        if isinstance(value, Mapping):
            name = value.get("name")
            inner = name if isinstance(name, str) else hint
            return {
                str(k): iso(float(v)) if _is_time_key(k) and _is_number(v)
                else self.readable(holder, v, inner if k == "content" else str(k))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.readable(holder, v, hint) for v in value]
        return value

    def json_bytes(self) -> bytes:
        return json.dumps(self.document, ensure_ascii=False, indent=1, sort_keys=True).encode()

    def archive(self, *, with_files: bool = True) -> bytes:
        """The zip: ``export.json`` first, then every file (or none, each marked omitted)."""
        created = self.document.get("created_at")
        stamp = (1980, 1, 1, 0, 0, 0)
        if isinstance(created, str):
            moment = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            stamp = moment.timetuple()[:6] if moment.year >= 1980 else stamp
        document = self.json_bytes() if with_files else self.without_files().json_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(DOCUMENT_NAME, stamp), document,
                             compress_type=zipfile.ZIP_DEFLATED)
            for path, data in sorted(self.files.items()) if with_files else ():
                # Images are compressed already.
                archive.writestr(zipfile.ZipInfo(path, stamp), data,
                                 compress_type=zipfile.ZIP_STORED)
        return buffer.getvalue()

    def without_files(self) -> Export:
        """The same document with each file reference marked as left out of this copy."""
        omitted = set(self.files)

        def mark(value: object) -> object:
            if isinstance(value, dict):
                if value.get("file") in omitted:
                    return {**value, "omitted": True}
                return {k: mark(v) for k, v in value.items()}
            if isinstance(value, list):
                return [mark(v) for v in value]
            return value

        document = mark(self.document)
        assert isinstance(document, dict)
        document["files_omitted"] = len(omitted)
        return Export(document)


# --- per-holder readers ----------------------------------------------------------


def decode_queued(export: Export, raw: Mapping[str, object]) -> object:
    """The outbox's rows with each payload decoded from its wire CBOR."""
    rows = raw.get("queued_events", [])
    decoded: list[object] = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping):
            continue
        item = {k: v for k, v in row.items() if k != "payload"}
        payload = row.get("payload")
        msg_id = str(row.get("msg_id", "event"))
        if isinstance(payload, bytes):
            try:
                item["event"] = cbor.loads_untrusted(payload, max_bytes=MAX_EVENT_BYTES)
            except DecodeError:
                item["event"] = export.attach("outbox", f"{msg_id}.cbor", payload)
        found = item.get("event")
        if isinstance(found, Mapping):
            event = dict(found)
            if isinstance(event.get("img"), bytes):
                event["img"] = export.attach("outbox", f"{msg_id}-image", event["img"])
            item["event"] = event
        decoded.append(export.readable("outbox", item))
    return {"queued_events": decoded}


def enrolment_dates(section: object, trail: Iterable[AuditEntry]) -> object:
    """Identities with the times they were enrolled (face.enrol entries of the audit trail)."""
    if not isinstance(section, dict) or not isinstance(section.get("identities"), list):
        return section
    enrolments: dict[str, list[dict[str, object]]] = {}
    for entry in trail:
        who = entry.detail.get("id")
        if entry.kind == "face.enrol" and isinstance(who, str):
            enrolments.setdefault(who, []).append(
                {"at": iso(entry.at), "samples": entry.detail.get("samples")}
            )
    identities = []
    for identity in section["identities"]:
        if isinstance(identity, dict):
            found = enrolments.get(str(identity.get("id")), [])
            identities.append({**identity, "enrolled_at": found[0]["at"] if found else None,
                               "enrolments": found})
        else:
            identities.append(identity)
    crops = section.get("face_crops", GALLERY_KEEPS_NO_CROPS)
    return {**section, "identities": identities, "face_crops": crops}


def identifiers(document: Mapping[str, object]) -> set[str]:
    """Identity ids and event ids named in the export: what a log line about the subject names."""
    found: set[str] = set()

    def walk(value: object, key: str = "") -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in {"id", "msg_id", "plate"} and len(value) >= 6:
            found.add(value)

    walk(document)
    return found


def lines_about(lines: Iterable[str], names: set[str]) -> tuple[list[object], int]:
    """(the newest MAX_LOG_LINES lines about the subject, how many matched in all)."""
    kept: list[str] = []
    matched = 0
    for line in lines:
        if any(m in line for m in PERSONAL_MARKERS) or any(n in line for n in names):
            matched += 1
            kept.append(line)
            if len(kept) > MAX_LOG_LINES:
                del kept[0]
    parsed: list[object] = []
    for line in kept:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            parsed.append(line)
    return parsed, matched


def audit_section(reader: AuditReader) -> dict[str, object]:
    head = reader.head()
    return {
        "chain": CHAIN,
        "head": {"index": head.index, "mac": head.mac.hex()},
        "entries": [
            {"index": e.index, "at": iso(e.at), "kind": e.kind, "detail": dict(e.detail),
             "mac": e.hash.hex()}
            for e in reader.entries()
        ],
    }
