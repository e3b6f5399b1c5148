"""Composition of the upgrade feature: ``build_installer``, ``build_service`` and MQTT handlers."""

from __future__ import annotations

import logging
import pathlib
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from agent.config import AgentConfig
from agent.errors import DecodeError, DeviceIOError, EdgeAgentError
from agent.events import Event, PendingEvents
from agent.layout import StateLayout
from agent.ports import AuditSink, Clock, CommandArgs, CommandResult, EventSink
from agent.upgrade.builder import class_uuid, vendor_uuid
from agent.upgrade.machine import Decision, State
from agent.upgrade.policy import (
    DeviceIdentity,
    auto_install_allowed,
    deferral_until,
    in_maintenance_window,
)
from agent.upgrade.ports import ImageSource, SlotDriver
from agent.upgrade.settings import ManifestSource, SlotBackend
from drivers.clock import SystemClock
from drivers.upgrade.bootenv import GrubEnv, UBootEnv
from drivers.upgrade.hawkbit import DdiClient, HawkbitPoller, controller_id
from drivers.upgrade.http import HttpImageSource, fetch_bounded, http_options
from drivers.upgrade.installer import Checkpoint, Installer, Progress, no_checkpoint
from drivers.upgrade.keystore import KeyStore
from drivers.upgrade.slots import EnvSlotDriver, SimulatedMachine, file_slots
from drivers.upgrade.statefile import FileStateStore

REBOOT_RETRY_SECONDS = 300.0
log = logging.getLogger(__name__)


def upgrade_dir(config: AgentConfig) -> pathlib.Path:
    return StateLayout(config.state_dir).upgrade_dir


def device_identity(config: AgentConfig) -> DeviceIdentity:
    vendor = vendor_uuid(config.upgrade.vendor_domain)
    return DeviceIdentity(vendor, class_uuid(vendor, config.device.hardware_class))


def build_slots(config: AgentConfig) -> tuple[SlotDriver, SimulatedMachine | None]:
    settings = config.upgrade
    if settings.slot_backend == SlotBackend.FILE:
        return file_slots(StateLayout(config.state_dir).simulated_slots, settings.boot_limit)
    if settings.slot_a_path is None or settings.slot_b_path is None:
        raise DecodeError("upgrade.slot_a_path and slot_b_path are required for this backend")
    paths = {"a": settings.slot_a_path, "b": settings.slot_b_path}
    if settings.slot_backend == SlotBackend.UBOOT:
        env: UBootEnv | GrubEnv = UBootEnv(settings.uboot_env_config, settings.uboot_default_env)
    else:
        env = GrubEnv(settings.grub_env_path)
    return EnvSlotDriver(paths, env, boot_limit=settings.boot_limit), None


def build_installer(
    config: AgentConfig,
    sink: EventSink | None = None,
    audit: AuditSink | None = None,
    *,
    source: ImageSource | None = None,
    on_progress: Progress | None = None,
    checkpoint: Checkpoint = no_checkpoint,
    clock: Clock | None = None,
) -> tuple[Installer, SimulatedMachine | None]:
    settings = config.upgrade
    slots, machine = build_slots(config)
    keys = KeyStore(
        settings.trusted_keys,
        StateLayout(config.state_dir).trusted_keys,
        settings.accepted_algorithms,
    )
    installer = Installer(
        settings=settings,
        device=device_identity(config),
        keys=keys,
        slots=slots,
        source=source or HttpImageSource(options=http_options(settings)),
        store=FileStateStore(StateLayout(config.state_dir)),
        sink=sink,
        audit=audit,
        on_progress=on_progress,
        clock=clock or SystemClock(),
        checkpoint=checkpoint,
    )
    return installer, machine


def _local_minute(now: float) -> int:
    local = time.localtime(now)
    return local.tm_hour * 60 + local.tm_min


class UpgradeService:
    """Periodic check + auto-install in the maintenance window; health-gated commit after boot."""

    name = "upgrade"

    def __init__(
        self,
        config: AgentConfig,
        installer: Installer,
        health_check: Callable[[], bool],
        *,
        reboot: Callable[[], None],
        fetch_manifest: Callable[[], bytes] | None = None,
        local_minute: Callable[[float], int] = _local_minute,
        events: PendingEvents | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        # A hawkBit server instead of fetch_manifest (upgrade.source = "hawkbit").
        self.fleet: HawkbitPoller | None = None
        self.settings = config.upgrade
        self.installer = installer
        self.health_check = health_check
        self.reboot = reboot
        self.fetch_manifest = fetch_manifest
        self.local_minute = local_minute
        # upgrade.state reports from the worker thread, handed out by ``tick``.
        self.events = events or PendingEvents()
        self.clock = clock or SystemClock()
        self.next_check = 0.0
        self.last_error = ""
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._reboot_requested = ("", 0.0)
        self._stopping = threading.Event()
        installer.should_stop = self._stopping.is_set

    def attach_fleet(self, fleet: HawkbitPoller) -> None:
        """Take releases from a hawkBit server; its cancelAction stops a download too."""
        self.fleet = fleet
        self.installer.on_progress = fleet.on_progress
        self.installer.should_stop = lambda: self._stopping.is_set() or fleet.cancelled()

    # --- Service -------------------------------------------------------------

    def start(self) -> None:
        # Reconcile with the bootloader first; an interrupted download resumes in the worker.
        self._spawn(self._resume)

    def _resume(self) -> None:
        try:
            with self._lock:
                self.installer.clean_up()
                self.installer.resume()
        except EdgeAgentError as exc:
            self._note(exc)

    def tick(self, now: float) -> Sequence[Event]:
        try:
            self._act(now)
        except EdgeAgentError as exc:  # e.g. the boot environment cannot be read
            self._note(exc)
        return self.events.drain()

    def _note(self, exc: EdgeAgentError) -> None:
        """Keep the error for ``upgrade.status``; log it once, not on every pass."""
        if str(exc) != self.last_error:
            log.warning("upgrade: %s", exc)
        self.last_error = str(exc)

    def _act(self, now: float) -> None:
        if self._busy():
            return
        with self._lock:
            record = self.installer.record()
        if record.state == State.TRIAL:
            self._health(now)
        elif self._needs_reboot(record.state, now, record.deferred_until):
            self._reboot(now)
        elif self.fleet is not None and self.fleet.due(now):
            self._spawn(lambda: self._poll_fleet(now))
        elif (
            self.fetch_manifest is not None
            and now >= self.next_check
            and self._may_act(now, record.deferred_until)
        ):
            self.next_check = now + self.settings.check_interval_seconds
            self._spawn(self._check_and_install)

    def stop(self) -> None:
        """Interrupt a download (it resumes on the next start) and wait for the worker."""
        self._stopping.set()
        self.wait(10.0)
        self._stopping.clear()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background work (start-up reconciliation, check, install) to finish."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    # --- helpers ---------------------------------------------------------------

    def _busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _may_act(self, now: float, deferred_until: float) -> bool:
        return (
            auto_install_allowed(
                self.settings.enabled, self.settings.auto_install_models, self.config.device.model
            )
            and now >= deferred_until
            and in_maintenance_window(self.settings.maintenance_windows, self.local_minute(now))
        )

    def _needs_reboot(self, state: State, now: float, deferred_until: float) -> bool:
        if state == State.ROLLED_BACK:
            return self._running_rejected_slot()
        if state != State.AWAITING_REBOOT:
            return False
        return self._may_act(now, deferred_until) or (
            self.fleet is not None and self.fleet.forced  # hawkBit: "update": "forced"
        )

    def _running_rejected_slot(self) -> bool:
        status = self.installer.slots.boot_status()
        return status.booted_slot != status.next_slot

    def _reboot(self, now: float) -> None:
        boot_id = self.installer.slots.boot_status().boot_id
        last_boot_id, last_at = self._reboot_requested
        if boot_id == last_boot_id and now - last_at < REBOOT_RETRY_SECONDS:
            return  # the reboot is under way; do not ask again every tick
        self._reboot_requested = (boot_id, now)
        try:
            self.reboot()
        except EdgeAgentError as exc:
            self._note(exc)

    def _health(self, now: float) -> None:
        try:
            healthy = bool(self.health_check())
        except Exception as exc:  # a crashing health check is an unhealthy device
            self.last_error = f"health check raised {type(exc).__name__}"
            healthy = False
        with self._lock:
            _, decision = self.installer.health(healthy)
        if decision == Decision.ROLLBACK:
            self._reboot(now)

    def _spawn(self, work: Callable[[], None]) -> bool:
        if self._busy():
            return False
        self._worker = threading.Thread(target=work, name="upgrade", daemon=True)
        self._worker.start()
        return True

    def _check_and_install(self, envelope: bytes | None = None, *, force: bool = False) -> None:
        try:
            if envelope is None:
                assert self.fetch_manifest is not None
                envelope = self.fetch_manifest()
            with self._lock:
                self.installer.install(envelope, force=force)
            self.last_error = ""
        except EdgeAgentError as exc:
            self._note(exc)

    def _poll_fleet(self, now: float) -> None:
        try:
            assert self.fleet is not None
            with self._lock:
                self.fleet.poll(now)
            self.last_error = ""
        except EdgeAgentError as exc:
            self._note(exc)

    def local_policy_ok(self, now: float) -> bool:
        """May this device install now by its own rules (a hawkBit "attempt")?"""
        return self._may_act(now, self.installer.record().deferred_until)

    # --- MQTT command handlers -----------------------------------------------

    def handle_status(self, args: CommandArgs) -> CommandResult:
        return {**self.installer.status(), "busy": self._busy(), "last_error": self.last_error}

    def _no_manifest_source(self) -> DecodeError:
        if self.fleet is not None:
            # The fleet server decides what installs and when; a local trigger would
            # race its actions and bypass its rollout groups.
            return DecodeError(
                "this device is managed by a hawkBit server (upgrade.source = \"hawkbit\"): "
                "assign the release there, or use `edge-agent upgrade apply --file` offline"
            )
        return DecodeError("upgrade.manifest_url is not configured")

    def handle_check(self, args: CommandArgs) -> CommandResult:
        if self.fetch_manifest is None:
            raise self._no_manifest_source()
        verified = self.installer.verify(self.fetch_manifest())
        manifest = verified.manifest
        return {
            "available": True,
            "sequence": manifest.sequence,
            "version": manifest.software_version,
            "size": manifest.image_size or 0,
        }

    def handle_apply(self, args: CommandArgs) -> CommandResult:
        if "defer_seconds" in args:
            until = deferral_until(
                args["defer_seconds"], self.clock.now(), self.settings.max_deferral_seconds
            )
            with self._lock:
                self.installer.defer(until)
            return {"deferred_until": until}
        force = args.get("force", False)
        if not isinstance(force, bool):
            raise DecodeError("force must be true or false")
        if self.fetch_manifest is None:
            raise self._no_manifest_source()
        envelope = self.fetch_manifest()
        # Bad manifests (and a sequence that failed here, unless forced) fail the command.
        self.installer.verify(envelope, force=force)
        started = self._spawn(lambda: self._check_and_install(envelope, force=force))
        return {"started": started}

    def command_handlers(self) -> Mapping[str, Callable[[CommandArgs], CommandResult]]:
        return {
            "upgrade.check": self.handle_check,
            "upgrade.apply": self.handle_apply,
            "upgrade.status": self.handle_status,
        }


def _reboot_command(command: tuple[str, ...]) -> Callable[[], None]:
    def reboot() -> None:
        try:
            subprocess.run(list(command), check=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DeviceIOError(f"reboot command failed: {exc}") from exc

    return reboot


def _simulated_reboot(machine: SimulatedMachine, installer: Installer) -> Callable[[], None]:
    def reboot() -> None:
        machine.boot()
        installer.resume()

    return reboot


def build_service(
    config: AgentConfig,
    health_check: Callable[[], bool],
    audit: AuditSink | None = None,
    *,
    clock: Clock | None = None,
    events: PendingEvents | None = None,
) -> UpgradeService:
    """The upgrade Service; its ``command_handlers()`` answer ``upgrade.*``."""
    events = events or PendingEvents()
    settings = config.upgrade
    client = (
        DdiClient(settings, controller_id(config))
        if settings.source == ManifestSource.HAWKBIT
        else None
    )
    installer, machine = build_installer(
        config,
        events,
        audit,
        clock=clock,
        source=client.image_source() if client is not None else None,
    )
    reboot = (
        _simulated_reboot(machine, installer)
        if machine is not None
        else _reboot_command(config.upgrade.reboot_command)
    )
    url = settings.manifest_url if client is None else ""

    def fetch() -> bytes:
        return fetch_bounded(url, settings.max_manifest_bytes, options=http_options(settings))

    service = UpgradeService(
        config,
        installer,
        health_check,
        reboot=reboot,
        fetch_manifest=fetch if url else None,
        events=events,
        clock=clock,
    )
    if client is not None:
        poller = HawkbitPoller(
            client,
            installer,
            StateLayout(config.state_dir),
            service.clock,
            service.local_policy_ok,
        )
        service.attach_fleet(poller)
    return service
