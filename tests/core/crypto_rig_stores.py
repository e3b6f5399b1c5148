"""The personal-data stores of issue 11 seeded in a state directory, and what a restart can read.

Besides the queued events of :mod:`tests.core.crypto_rig` (``cloud_events``,
``usage_statistics``), the seed holds a face gallery (names, labels, vectors),
a plate watch-list (plates, labels) and stored log lines (the live file, a
rotated one and a crash record), each sealed under its purpose's data key.

``python -m tests.core.crypto_rig_stores CONFIG STATE_DIR`` starts on
``STATE_DIR`` as the daemon does (``compose(Mode.DAEMON)``, whose rights
feature finishes interrupted destructions and withdrawals, then
``ConsentLedger.reapply_withdrawals`` as ``Agent.start``), stops, and prints
as JSON what can still be read: through the stores themselves, and from the
raw bytes of every file of the state directory (markers in clear, and every
sealed header with the key it names).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import pathlib
import sys
import time
from typing import Any

import numpy as np

from agent import config as agent_config
from agent.config import AgentConfig
from agent.errors import EdgeAgentError
from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.jsonlog import JsonLineFormatter
from agent.logs.redact import Redactor
from agent.matching.gallery import Gallery
from agent.matching.gallery_manifest import Sealer, read_manifest
from agent.matching.plates import PlateEntry, PlateList
from agent.matching.plates_store import PlateStore
from agent.matching.search import l2_normalise
from agent.purposes import Purpose
from agent.sealing import MAGIC, KeyDestroyed, SealedDataError, read_header
from drivers.compose import compose
from drivers.logs.feature import build_logs
from drivers.logs.setup import write_crash_record
from drivers.logs.store import LogStore
from drivers.vision.feature import build_faces, build_plates
from tests.core import crypto_rig

CONFIG_TOML = "[mqtt]\nenabled = false\n\n[camera]\nenabled = false\n"
DIM = 16
PEOPLE = {  # name -> label
    "Zorbadine Quillfeather": "ZQ-LABEL-front-door",
    "Marlowe Pettigrass": "MP-LABEL-garden",
    "Ottilie Brackwater": "OB-LABEL-garage",
}
PLATES = {  # plate -> label
    "QX7ZK42": "PLATE-LABEL-neighbour",
    "JW93MVR": "PLATE-LABEL-courier",
    "ZZ11QQX": "PLATE-LABEL-blocked",
}
LOG_MARKER = "LOGLINE-porch-lamp flickered seedline"
LOG_LINES = 6  # in the live file and a rotated one
CRASH_MARKER = "CRASHRECORD-MARKER-9be2"
STORES = (
    Purpose.FACE_RECOGNITION, Purpose.PLATE_RECOGNITION, Purpose.TROUBLESHOOTING_LOGS,
)
# What a restarted daemon builds: the spine plus the three stores' features.
BUILDERS = (build_logs, build_faces, build_plates)


def write_config(path: pathlib.Path) -> pathlib.Path:
    """The configuration the CLI child and the restart both read (``--config``)."""
    path.write_text(CONFIG_TOML)
    return path


def load(config: pathlib.Path, state_dir: pathlib.Path) -> AgentConfig:
    return agent_config.load(config, state_dir=state_dir)


def vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {name: rng.standard_normal((2, DIM)) for name in PEOPLE}


def vector_probes() -> list[bytes]:
    """The float32 bytes of each stored (normalised) sample: a vector in clear shows them."""
    return [row.tobytes() for rows in vectors().values() for row in l2_normalise(rows)]


def clear_markers() -> list[str]:
    """Every seeded text of the three stores, none of which may ever be on disk in clear."""
    return [*PEOPLE, *PEOPLE.values(), *PLATES, *PLATES.values(), LOG_MARKER, CRASH_MARKER]


def seed(config: pathlib.Path, state_dir: pathlib.Path) -> dict[str, list[int]]:
    """Queue the events of :func:`crypto_rig.seed`, grant the three purposes, fill the stores.

    Returns the key numbers each store's data was sealed under.
    """
    crypto_rig.seed(state_dir)
    composition = compose(load(config, state_dir), Mode.CLI, builders=())
    try:
        now = composition.clock.now()
        for purpose in STORES:
            composition.ledger.grant(purpose, now, source="test")
    finally:
        composition.close()
    layout = StateLayout(state_dir)
    keys = DataKeys(layout)
    gallery = Gallery.open(layout.faces_dir, DIM, keys=keys)
    for name, rows in vectors().items():
        gallery.enrol(name, rows, label=PEOPLE[name])
    plates = PlateStore(layout.plates_db, keys=keys)
    try:
        for plate, label in PLATES.items():
            plates.put(PlateEntry(plate, PlateList.DENY, label, None, now))
    finally:
        plates.close()
    settings = load(config, state_dir).logs
    logs = LogStore(state_dir, settings, keys=keys)
    handler = logs.open_handler()
    handler.setFormatter(JsonLineFormatter(Redactor()))
    try:
        for i in range(LOG_LINES):
            record = logging.LogRecord(
                "seed", logging.WARNING, __file__, 1, "%s %d", (LOG_MARKER, i), None
            )
            record.created = time.time() - 60
            handler.emit(record)
            if i == LOG_LINES // 2 - 1:
                handler.doRollover()
    finally:
        handler.close()
    write_crash_record(logs, Redactor(), "exception", CRASH_MARKER, CRASH_MARKER, now=now - 60)
    return {p.value: keys.live_numbers(p.value) for p in STORES}


# --- reading after a restart ------------------------------------------------------------------


def _headers(data: bytes) -> list[tuple[str, int]]:
    """The (domain, key number) of every sealed blob in ``data``, raw or in base64 lines."""
    found = []
    blobs = [data]
    for line in data.splitlines():
        try:
            blobs.append(base64.b64decode(line.strip(), validate=True))
        except (binascii.Error, ValueError):
            continue
    for blob in blobs:
        at = blob.find(MAGIC)
        while at >= 0:
            try:
                header = read_header(blob[at:])
                found.append((header.domain, header.number))
            except SealedDataError:
                pass
            at = blob.find(MAGIC, at + 1)
    return found


def scan_files(
    state_dir: pathlib.Path,
    texts: list[bytes] | None = None,
    probes: list[bytes] | None = None,
) -> dict[str, Any]:
    """Raw bytes of every file: ``texts`` (default: the seeded ones) or vector ``probes``
    in clear, and sealed headers per domain."""
    texts = [t.encode() for t in clear_markers()] if texts is None else texts
    probes = vector_probes() if probes is None else probes
    clear: list[list[str]] = []
    headers: dict[str, dict[int, list[str]]] = {}
    for path in sorted(p for p in state_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = str(path.relative_to(state_dir))
        clear += [[name, t.decode()] for t in texts if t in data]
        clear += [[name, "vector"] for probe in probes if probe in data]
        for domain, number in _headers(data):
            headers.setdefault(domain, {}).setdefault(number, [])
            if name not in headers[domain][number]:
                headers[domain][number].append(name)
    return {"clear": clear, "headers": headers}


def read_faces(layout: StateLayout, keys: DataKeys) -> dict[str, Any]:
    """Names, labels and samples the gallery still gives (``error``: it could not be opened)."""
    seen: dict[str, Any] = {"names": [], "labels": [], "vectors": 0, "error": None}
    try:
        manifest = read_manifest(layout.faces_dir, Sealer(keys))
        if manifest is None:
            return seen
        seen["names"] = sorted(r.name for r in manifest.identities)
        seen["labels"] = sorted(r.label for r in manifest.identities if r.label)
        gallery = Gallery.open(layout.faces_dir, manifest.dim, manifest.storage, keys=keys)
        stored = gallery.store.float_rows(slice(None))
        wanted = np.concatenate([l2_normalise(rows) for rows in vectors().values()])
        seen["vectors"] = int(sum(
            bool(np.any(np.all(np.isclose(stored, row, atol=1e-6), axis=1))) for row in wanted
        ))
    except KeyDestroyed as exc:
        seen["error"] = f"KeyDestroyed: {exc}"
    except EdgeAgentError as exc:
        seen["error"] = f"{type(exc).__name__}: {exc}"
    return seen


def read_plates(layout: StateLayout, keys: DataKeys) -> dict[str, Any]:
    store = PlateStore(layout.plates_db, keys=keys)
    try:
        entries = store.entries()
    finally:
        store.close()
    return {
        "plates": sorted(e.plate for e in entries),
        "labels": sorted(e.label for e in entries if e.label),
    }


def read_logs(config: AgentConfig, keys: DataKeys) -> dict[str, int]:
    store = LogStore(config.state_dir, config.logs, keys=keys)
    lines = list(store.iter_lines())
    return {
        "lines": sum(LOG_MARKER in line for line in lines),
        "crash": sum(CRASH_MARKER in line for line in lines),
    }


def restart_and_read(config_path: pathlib.Path, state_dir: pathlib.Path) -> dict[str, Any]:
    config = load(config_path, state_dir)
    # The daemon's start: the rights feature recovers (finish_destruction,
    # resume_withdrawals, ...) while compose builds it; Agent.start then re-runs
    # the withdrawal hooks of every purpose that is off.
    composition = compose(config, Mode.DAEMON, builders=BUILDERS)
    try:
        composition.ledger.reapply_withdrawals()
        seen: dict[str, Any] = crypto_rig.read_composition(composition, STORES)
    finally:
        composition.close()
    layout = StateLayout(state_dir)
    seen.update(scan_files(state_dir))  # before the stores' own reads drop anything
    keys = DataKeys(layout)
    seen["faces"] = read_faces(layout, keys)
    seen["plates"] = read_plates(layout, keys)
    seen["logs"] = read_logs(config, keys)
    return seen


def main(argv: list[str]) -> int:
    seen = restart_and_read(pathlib.Path(argv[0]), pathlib.Path(argv[1]))
    print(json.dumps(seen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
