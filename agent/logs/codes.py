"""Stable error codes, in the spirit of journald's ``MESSAGE_ID``.

Every kind of failure the agent logs gets a short code (``EA-MQTT-001``) for
humans and a fixed 128-bit id for machines.  Both are part of the device's
contract with field technicians and support tooling: once released, a code
keeps its meaning forever, so the registry is append-only.  Log calls attach
one with ``logger.error("...", extra=code.extra())``.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from agent.errors import NotFoundError

_CODE_SHAPE = re.compile(r"^EA-[A-Z]{2,8}-\d{3}$")


@dataclasses.dataclass(frozen=True)
class ErrorCode:
    code: str
    message_id: str  # 32 lowercase hex digits, as journald prints MESSAGE_ID
    summary: str

    def extra(self) -> dict[str, object]:
        return {"error_code": self.code, "message_id": self.message_id}


# Ids were generated once with uuid4().hex and must never change.
_DEFINITIONS: tuple[tuple[str, str, str], ...] = (
    ("EA-MQTT-001", "5c1a0d3e8f9b4c27a6e1d2b3c4f50617", "broker connection lost"),
    ("EA-MQTT-002", "0b6f7e1a2c3d4e5f8091a2b3c4d5e6f7", "malformed command rejected"),
    ("EA-CONS-001", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "operation refused: consent missing"),
    ("EA-CAM-001", "1f2e3d4c5b6a79880a9b8c7d6e5f4a3b", "camera source failed"),
    ("EA-UPG-001", "a1b2c3d4e5f60718293a4b5c6d7e8f90", "upgrade manifest rejected"),
    ("EA-PROV-001", "c0ffee00d15ea5e0b0a7f00dfeedface", "provisioning step failed"),
    ("EA-WIFI-001", "2468ace013579bdf2468ace013579bdf", "Wi-Fi association failed"),
    ("EA-SER-001", "13579bdf2468ace013579bdf2468ace0", "serial frame rejected"),
    ("EA-SER-002", "1de1ebe17d6e4da88c2304bbff928c9f", "serial peer stopped reading; dropped"),
    ("EA-AUTH-001", "7f3e2a1b0c9d8e7f6a5b4c3d2e1f0a9b", "technician authentication failed"),
    ("EA-AUTH-002", "8a9b0c1d2e3f405162738495a6b7c8d9", "technician locked out"),
    ("EA-LOG-001", "4d5e6f708192a3b4c5d6e7f801234567", "log bundle truncated"),
    ("EA-RGT-001", "e1d2c3b4a5968778695a4b3c2d1e0f1a", "personal-data holder failed"),
    ("EA-RET-001", "f0e1d2c3b4a5968778695a4b3c2d1e0f", "retention purge failed"),
    ("EA-AUD-001", "3c4d5e6f708192a3b4c5d6e7f8091a2b", "audit chain verification failed"),
    ("EA-CRASH-001", "deadbeef0badf00d1234567890abcdef", "unhandled exception"),
    ("EA-GEN-001", "00112233445566778899aabbccddeeff", "unclassified error"),
    ("EA-DB-001", "a188196a8a024d8ab776e893d3f8d95d", "database damaged; moved aside and salvaged"),
    ("EA-DB-002", "96881e6018e449f0a7934a99054ae411", "storage full; new events refused"),
    ("EA-DB-003", "8bf0f1cfdc444787a24e6b5653647250", "committed events lost from the database"),
    ("EA-DB-004", "25c03d9e81a24bcfa42c1993f3fce686", "database write failed"),
)


def _build() -> dict[str, ErrorCode]:
    registry: dict[str, ErrorCode] = {}
    seen_ids: set[str] = set()
    for code, message_id, summary in _DEFINITIONS:
        if not _CODE_SHAPE.match(code) or code in registry:
            raise ValueError(f"bad or duplicate error code {code}")
        normalised = uuid.UUID(hex=message_id).hex
        if normalised in seen_ids:
            raise ValueError(f"duplicate message id for {code}")
        seen_ids.add(normalised)
        registry[code] = ErrorCode(code, normalised, summary)
    return registry


REGISTRY: dict[str, ErrorCode] = _build()


_CODE_IN_TEXT = re.compile(r"\bEA-[A-Z]{2,8}-\d{3}\b")


def message_id_of(code: str | None, text: str = "") -> str | None:
    """journald's MESSAGE_ID for a coded log line: its ``error_code``, else a code it names.

    Log calls attach a code with ``extra=code.extra()``; some name it in the text
    (``"EA-DB-004 storage: ..."``).  None for a line with no known code.
    """
    if code is None:
        found = _CODE_IN_TEXT.search(text[:200])
        code = found.group(0) if found else None
    entry = REGISTRY.get(code) if code else None
    return entry.message_id if entry else None


def lookup(code: str) -> ErrorCode:
    try:
        return REGISTRY[code]
    except KeyError:
        raise NotFoundError(f"unknown error code {code[:20]!r}") from None


MQTT_CONNECTION_LOST = REGISTRY["EA-MQTT-001"]
MQTT_BAD_COMMAND = REGISTRY["EA-MQTT-002"]
CONSENT_MISSING = REGISTRY["EA-CONS-001"]
SERIAL_BAD_FRAME = REGISTRY["EA-SER-001"]
SERIAL_PEER_STALLED = REGISTRY["EA-SER-002"]
AUTH_FAILED = REGISTRY["EA-AUTH-001"]
AUTH_LOCKED_OUT = REGISTRY["EA-AUTH-002"]
BUNDLE_TRUNCATED = REGISTRY["EA-LOG-001"]
HOLDER_FAILED = REGISTRY["EA-RGT-001"]
RETENTION_FAILED = REGISTRY["EA-RET-001"]
AUDIT_BROKEN = REGISTRY["EA-AUD-001"]
CRASH = REGISTRY["EA-CRASH-001"]
UNCLASSIFIED = REGISTRY["EA-GEN-001"]
DB_DAMAGED = REGISTRY["EA-DB-001"]
STORAGE_FULL = REGISTRY["EA-DB-002"]
EVENTS_LOST = REGISTRY["EA-DB-003"]
DB_WRITE_FAILED = REGISTRY["EA-DB-004"]
