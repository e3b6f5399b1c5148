"""Wiring the features into ``edge-agent run`` (part of the composition root).

:func:`attach_features` builds each feature the configuration enables, with
lazy imports so a disabled feature costs no memory (OpenCV is only loaded when
the camera runs), and connects it to the spine: services to the loop,
commands to the router, stores to the consent ledger, the rights registry and
retention, actions to the audit log.  :func:`register_personal_data` and
:func:`known_secrets` let one-shot CLI commands see the same stores.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.consent import ConsentLedger
from agent.errors import EdgeAgentError
from agent.ports import CommandArgs, CommandHandler, CommandResult, PersonalDataHolder
from agent.provisioning.settings import WifiBackendKind
from agent.purposes import Purpose
from agent.rights.registry import DataRegistry, ErasureScope, RetentionKind
from drivers.clock import SystemClock

if TYPE_CHECKING:
    from agent.logs.redact import Redactor
    from drivers.camera import CameraService
    from drivers.logs.store import LogStore
    from drivers.runtime import Agent

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Features:
    audit: AuditLog
    registry: DataRegistry
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("closing a feature failed")


def register_personal_data(config: AgentConfig, registry: DataRegistry) -> None:
    """Stores outside this process's spine, for ``edge-agent data export|erase``."""
    from agent.database import Database
    from agent.outbox import Outbox
    from drivers.logs.files import FileHolder
    from drivers.provisioning.store import FileProvisioningStore

    db = Database.in_state_dir(config.state_dir)
    registry.add_holder(ConsentLedger(db, config.privacy.policy_version))
    outbox = Outbox(
        db,
        max_messages=config.outbox.max_messages,
        default_expiry_seconds=config.outbox.default_expiry_seconds,
    )
    registry.add_holder(outbox)
    registry.add_retention_target(outbox, RetentionKind.EVENTS)
    wifi = FileProvisioningStore(config.state_dir).credentials_path
    registry.add_holder(FileHolder("wifi_credentials", wifi), ErasureScope.WIFI)
    # Registered even with matching switched off: enrolments made while it was on stay
    # on disk and must still be exported and erased.
    registry.add_holder(FileHolder("face_gallery", _face_gallery_dir(config)))
    registry.add_holder(_LazyPlateStore(config))


def _face_gallery_dir(config: AgentConfig) -> pathlib.Path:
    # drivers.vision.gallery.face_gallery_dir, without loading OpenCV for a disabled feature.
    return config.state_dir / "faces"


class _LazyPlateStore:
    """The plate watch-list as a PersonalDataHolder that loads its code (numpy) on first use.

    Registering it must cost nothing: the agent registers every store at start-up,
    but exports and erasures are rare.
    """

    name = "plates"

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def _exists(self) -> bool:
        # The store's own file name, without importing it: nothing to load if absent.
        return any(self.config.state_dir.glob("plates.sqlite*"))

    def export_personal_data(self) -> Mapping[str, object]:
        if not self._exists():
            return {"plates": []}
        return _plate_store(self.config).export_personal_data()

    def erase_personal_data(self) -> int:
        return _plate_store(self.config).erase_personal_data() if self._exists() else 0


def _plate_store(config: AgentConfig) -> PersonalDataHolder:
    # drivers.vision.plate_reader.open_store, without loading OpenCV; opens no file until used.
    from agent.matching.plates_store import PlateStore

    return PlateStore.in_state_dir(
        config.state_dir, max_entries=config.matching.plate_max_entries
    )


def known_secrets(config: AgentConfig) -> Iterable[str]:
    """Enrolled names and plates, the serial number and the saved SSID: never in a bundle."""
    found = [config.device.serial_number]
    try:
        from drivers.provisioning.store import FileProvisioningStore

        saved = FileProvisioningStore(config.state_dir).load_credentials()
        if saved is not None:
            found.append(saved.ssid)
        if config.matching.enabled:
            from agent.matching.store import MANIFEST, Manifest
            from drivers.vision.gallery import face_gallery_dir
            from drivers.vision.plate_reader import open_store

            plates = open_store(config).export_personal_data().get("plates", [])
            for entry in plates if isinstance(plates, list) else []:
                if isinstance(entry, dict):
                    found += [str(entry[k]) for k in ("plate", "label") if entry.get(k)]
            manifest = face_gallery_dir(config.state_dir) / MANIFEST
            if manifest.is_file():
                for identity in Manifest.from_json(manifest.read_bytes()).identities:
                    found += [v for v in (identity.name, identity.label) if v]
    except (EdgeAgentError, OSError):
        log.warning("could not list enrolled names for redaction", exc_info=True)
    return found


class CachedSecrets:
    """The redactor asks on every line; the stores are read at most every ``ttl`` seconds."""

    def __init__(self, config: AgentConfig, ttl: float = 30.0) -> None:
        self.config = config
        self.ttl = ttl
        self._values: list[str] = []
        self._expires = float("-inf")

    def __call__(self) -> list[str]:
        now = time.monotonic()
        if now >= self._expires:
            self._expires = now + self.ttl
            self._values = list(known_secrets(self.config))
        return self._values


def _erase_and_clear_retained(agent: Agent, erase: CommandHandler) -> CommandHandler:
    def handler(args: CommandArgs) -> CommandResult:
        result = erase(args)
        topics = result.get("clear_retained_topics", [])
        if agent.link is not None and isinstance(topics, list):
            for topic in topics:
                if isinstance(topic, str):
                    agent.link.publish_retained(topic, b"")
        return result

    return handler


def _register(agent: Agent, handlers: Mapping[str, CommandHandler]) -> None:
    for name, handler in handlers.items():
        agent.router.register(name, handler)


def _attach_camera(agent: Agent, audit: AuditLog, clock: SystemClock) -> CameraService | None:
    if not agent.config.camera.enabled:
        return None
    from agent.motion import MotionDetector
    from drivers.camera import CAMERA_NAME, CameraService, MotionService
    from drivers.vision.capture import open_source

    config = agent.config
    camera = CameraService(open_source(config.camera), config.camera.fps)
    agent.add_service(camera)
    motion = MotionService(MotionDetector(CAMERA_NAME), agent.sink)
    camera.add_consumer(motion.latest.offer)
    agent.add_service(motion)
    if not config.matching.enabled:
        return camera
    from drivers.vision import pipeline, plate_reader

    faces = pipeline.build_service(
        config, agent.sink, agent.ledger.is_granted, audit=audit, shared_camera=True
    )
    camera.add_consumer(faces.offer_frame)
    agent.add_service(faces)
    agent.ledger.add_withdrawal_hook("face_gallery", faces.on_withdrawn)
    _register(agent, faces.commands())
    plates = plate_reader.build_service(
        config, sink=agent.sink, is_granted=agent.ledger.is_granted, clock=clock, audit=audit
    )
    agent.add_service(plates)
    agent.ledger.add_withdrawal_hook("plates", plates.on_withdrawn)
    _register(agent, plates.commands())
    return camera


def _attach_provisioning(
    agent: Agent, camera: CameraService | None, features: Features
) -> Callable[[], bool]:
    """Provisioning channels when a Wi-Fi backend is configured; returns ``claimed()``."""
    from drivers.provisioning.store import FileProvisioningStore, load_or_create_binding

    config = agent.config
    # The verification code exists from first boot on, provisioned or not: the label
    # and the technician's console login both need it.
    load_or_create_binding(config.state_dir, config.device.serial_number)
    store = FileProvisioningStore(config.state_dir)
    if config.provisioning.wifi_backend is not WifiBackendKind.NONE:
        from drivers.camera import FrameFeed
        from drivers.provisioning import service as provisioning
        from drivers.wifi import open_backend

        try:
            backend = open_backend(config.provisioning)
        except EdgeAgentError as exc:
            log.error("Wi-Fi backend unavailable, provisioning off: %s", exc)
        else:
            features.closers.append(backend.close)
            prov = provisioning.build_service(config, backend, audit=features.audit)
            agent.add_service(prov)
            if camera is not None:
                qr = FrameFeed("provisioning-qr", prov.offer_frame)
                camera.add_consumer(qr.latest.offer)
                agent.add_service(qr)
            _register(agent, provisioning.command_handlers(prov))
    return lambda: store.load_account() is not None


def _attach_upgrade(agent: Agent, audit: AuditLog) -> None:
    from drivers.upgrade.service import build_service as upgrade_service

    def healthy() -> bool:
        connected = bool(agent.link and agent.link.connected)
        return connected and agent.liveness.healthy(agent.monotonic())

    upgrade = upgrade_service(agent.config, agent.sink, healthy, audit=audit)
    agent.add_service(upgrade)
    _register(agent, upgrade.command_handlers())


def _attach_rights_and_logs(
    agent: Agent, features: Features, store: LogStore, redactor: Redactor
) -> None:
    from drivers.logs import wiring as logs

    config, audit, registry = agent.config, features.audit, features.registry
    agent.add_service(logs.build_retention_service(config, registry, audit=audit))
    rights = logs.build_rights_handlers(
        config, registry, audit=audit, retained_topics=lambda: [agent.topics.status]
    )
    agent.router.register("data.export", rights["data.export"])
    agent.router.register("data.erase", _erase_and_clear_retained(agent, rights["data.erase"]))
    bundles = logs.bundle_provider(store, redactor, config.logs)
    agent.router.register(
        "logs.upload", logs.logs_upload_handler(bundles, agent.ledger.is_granted, audit=audit)
    )
    # Serial console and LAN share one limiter: guesses on one count on the other.
    limiter = logs.auth_limiter(config)
    serial = logs.build_serial_log_service(config, store, redactor, limiter, audit=audit)
    if serial is not None:
        agent.add_service(serial)
    lan = logs.build_logs_lan_service(config, store, redactor, limiter, audit=audit)
    if lan is not None:
        agent.add_service(lan)


def attach_features(agent: Agent) -> Features:
    """Build every enabled feature and plug it into ``agent``; close the result at exit."""
    from agent.logs.redact import Redactor
    from drivers.logs import wiring as logs

    config = agent.config
    clock = SystemClock()
    audit = AuditLog.in_state_dir(config.state_dir)
    agent.ledger.audit = audit
    redactor = Redactor(CachedSecrets(config))
    handle = logs.install_logging(config, redactor)
    registry = logs.default_registry(config, handle.store)
    features = Features(audit, registry, [handle.close])
    register_personal_data(config, registry)
    # File-level purges for every store; the face and plate services, when the camera
    # runs them, replace these hooks (same store names) with their own.
    add_cli_withdrawal_hooks(config, agent.ledger)

    camera = _attach_camera(agent, audit, clock)
    claimed = _attach_provisioning(agent, camera, features)
    if config.discovery.discoverable:
        from drivers.discovery.service import build_service as discovery_service

        agent.add_service(discovery_service(config, time.time, claimed_fn=claimed))
    if config.upgrade.enabled:
        _attach_upgrade(agent, audit)
    _attach_rights_and_logs(agent, features, handle.store, redactor)
    return features


def add_cli_withdrawal_hooks(config: AgentConfig, ledger: ConsentLedger) -> None:
    """Purge the stores' files on withdrawal (CLI, and the agent before its services)."""
    from drivers.logs.files import FileHolder
    from drivers.logs.wiring import SNAPSHOT_DIR

    # Also with matching switched off: files left from when it was on go on withdrawal.
    gallery = FileHolder("face_gallery", _face_gallery_dir(config))

    def erase_faces(purpose: Purpose) -> int | None:
        return gallery.erase_personal_data() if purpose is Purpose.FACE_RECOGNITION else None

    plates = _LazyPlateStore(config)

    def erase_plates(purpose: Purpose) -> int | None:
        return plates.erase_personal_data() if purpose is Purpose.PLATE_RECOGNITION else None

    snapshots = FileHolder("snapshots", config.state_dir / SNAPSHOT_DIR)

    def erase_snapshots(purpose: Purpose) -> int | None:
        return snapshots.erase_personal_data() if purpose is Purpose.EVENT_SNAPSHOTS else None

    ledger.add_withdrawal_hook("face_gallery", erase_faces)
    ledger.add_withdrawal_hook("plates", erase_plates)
    ledger.add_withdrawal_hook("snapshots", erase_snapshots)
