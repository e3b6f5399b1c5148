"""The provisioning service: the channels that give the device its Wi-Fi and its owner.

``build_service(config, wifi_backend, frame_source=None, audit=None, *, clock,
principals)`` wires:
the binding (serial + verification code, created at first boot), the LAN API
window, Improv serial (if a port is configured) and the camera QR channel
(frames offered with :meth:`ProvisioningService.offer_frame`, or pulled from
``frame_source`` at the scan rate).  Every connection attempt, whatever its
channel, runs on one worker thread through the :class:`Provisioner`.  A
binding (a version-2 binding QR, or ``bind`` over the LAN API) makes the
owner's key the owner's in ``principals`` (the agent's principal store).

The window and the LAN attempt limiter are saved under ``limits/`` on every
change (:mod:`drivers.limitstore`): a restart keeps a lockout, and opens the
window by itself only on the very first start.

Once the device is provisioned, new Wi-Fi credentials from any channel (Improv,
a Wi-Fi QR, the LAN API) are taken only while the owner has reopened the window
(``provisioning.open_window``); Improv keeps answering (state, redirect URL),
and with ``improv_button_device`` set it also waits for a press of the button.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from agent.auth.principals import PrincipalStore
from agent.config import AgentConfig
from agent.database import Database
from agent.errors import BadDataError, EdgeAgentError, PolicyError, TransportError
from agent.events import Event
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.ports import AuditSink, Clock, CommandArgs, CommandHandler, CommandResult
from agent.provisioning.binding import Binding
from agent.provisioning.improv_device import DeviceInfo, ImprovDevice
from agent.provisioning.lan import LanLimits, LanProvisioning
from agent.provisioning.limits import ProvisioningWindow, ScanScheduler, WindowState
from agent.provisioning.pake import OwnerBinding
from agent.provisioning.provisioner import Provisioner
from agent.provisioning.qr_channel import QrChannel, QrKind, QrOutcome
from agent.provisioning.wifi import AccessPoint, ConnectResult, WifiBackend, WifiCredentials
from drivers.clock import SystemClock
from drivers.httpserve import ServerLimits
from drivers.limitstore import LimitStore
from drivers.provisioning.button import EvdevButton
from drivers.provisioning.improv_serial import ImprovSerialChannel, open_port
from drivers.provisioning.lan_server import LanApiServer
from drivers.provisioning.qr_reader import QrReader
from drivers.provisioning.store import (
    FileProvisioningStore,
    FileTokenLedger,
    load_or_create_binding,
)

log = logging.getLogger(__name__)

Frame = NDArray[np.uint8]
FIRMWARE_NAME = "edge-agent"


def _firmware_version() -> str:
    try:
        return importlib.metadata.version("edge-agent")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# After the window closes the API stays up this long so an installer can read
# the final status of its session.
STATUS_GRACE_SECONDS = 30.0
SCAN_TIMEOUT = 10.0
SCAN_CACHE_SECONDS = 15.0
# How long the Improv URL waits for the radio's worker (busy with a connection attempt).
ADDRESS_TIMEOUT = 2.0


class ProvisioningService:
    name = "provisioning"

    def __init__(
        self,
        config: AgentConfig,
        backend: WifiBackend,
        *,
        audit: AuditSink | None = None,
        frame_source: Callable[[], Frame | None] | None = None,
        clock: Clock | None = None,
        principals: PrincipalStore | None = None,
        on_attempt: Callable[[WifiCredentials], None] | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        self._config = config
        self._settings = config.provisioning
        self._backend = backend
        self._frame_source = frame_source
        self._clock = clock or SystemClock()
        # The agent passes its one DataKeys; a service built alone (tests, tools) opens
        # the state directory's keys itself.
        if keys is None:
            keys = DataKeys(StateLayout(config.state_dir))
        self.store = FileProvisioningStore(config.state_dir, keys=keys)
        self.binding: Binding = load_or_create_binding(
            config.state_dir, config.device.serial_number
        )
        self.provisioner = Provisioner(
            backend,
            self.store,
            self._clock,
            audit=audit,
            connect_timeout=self._settings.connect_timeout_seconds,
            on_attempt=on_attempt,
        )
        self.window = ProvisioningWindow(self._settings.window_seconds)
        self.qr = QrChannel(FileTokenLedger(config.state_dir), self.binding)
        self.principals, self._own_db = _principal_store(config, principals)
        self._scheduler = ScanScheduler(self._settings.qr_scan_interval_seconds)
        self._reader = QrReader()
        # One worker owns the radio: scans and connection attempts never overlap.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provisioning")
        # Guards the window and the LAN core between HTTP threads and the main loop.
        self._lock = threading.Lock()
        self._scan_cache: tuple[float, list[AccessPoint]] | None = None
        self.lan: LanApiServer | None = None
        self.lan_core: LanProvisioning | None = None
        if self._settings.lan_enabled:
            self.lan_core = LanProvisioning(
                self.binding.serial_number,
                self.binding.verification_code,
                self.window,
                LanLimits(
                    self._settings.lan_max_failed_attempts,
                    self._settings.lan_failure_window_seconds,
                    self._settings.lan_lockout_seconds,
                    self._settings.lan_lockout_max_seconds,
                ),
            )
        # The window and the LAN limiter outlive restarts: a reboot must neither
        # reopen a closed window nor hand out a fresh set of guesses.
        layout = StateLayout(config.state_dir)
        LimitStore.attach(
            layout.provisioning_window, self.window, self._clock, "provisioning window"
        )
        if self.lan_core is not None:
            LimitStore.attach(
                layout.provisioning_lan_limits,
                self.lan_core.limiter,
                self._clock,
                "LAN provisioning attempt limiter",
            )
        self.improv: ImprovSerialChannel | None = None
        self._button: EvdevButton | None = None

    @property
    def provisioned(self) -> bool:
        return self.provisioner.provisioned

    @property
    def bound(self) -> bool:
        """An owner's key is trusted (an unbind over MQTT makes the device bindable again)."""
        return self.principals.owner() is not None

    def start(self) -> None:
        if self.provisioned:
            log.info(
                "Wi-Fi already provisioned; new credentials only after provisioning.open_window"
            )
        else:
            with self._lock:
                window = self.window.state(self._clock.now())
            if window is WindowState.NOT_OPENED:
                self.open_window()  # first start: the window opens by itself, once
            elif window is WindowState.OPEN:
                self._start_lan()  # open before the restart: only for what it had left
            else:
                log.info(
                    "provisioning window %s before this start; it stays closed until "
                    "provisioning.open_window",
                    window.value,
                )
        # Improv answers on a provisioned device too (its state and URL, as the spec
        # wants); it takes new credentials only when the owner reopened provisioning.
        self._start_improv()

    def _start_improv(self) -> None:
        settings = self._settings
        if not settings.improv_serial_port:
            return
        button = settings.improv_button_device
        device = ImprovDevice(
            self._device_info(),
            self._scan,
            settings.redirect_url,
            provisioned=lambda: self.provisioned,
            reopened=self._reopened,
            address=self._address,
            authorization_seconds=settings.improv_authorization_seconds if button else None,
        )
        try:
            port = open_port(settings.improv_serial_port, settings.improv_baud)
        except TransportError as exc:
            log.warning("Improv serial disabled: %s", exc)
            return
        self.improv = ImprovSerialChannel(
            port,
            device,
            lambda credentials: self.submit(credentials, "improv").result(),
            clock=self._clock,
        )
        self.improv.start()
        if button:
            self._button = EvdevButton(button, settings.improv_button_key, self.improv.authorize)
            self._button.start()

    def _reopened(self) -> bool:
        """The owner reopened provisioning: a provisioned device may change networks."""
        with self._lock:
            return self.window.is_open(self._clock.now())

    def _address(self) -> str | None:
        """The device's address now (for the Improv redirect URL), from the radio's worker."""
        try:
            status = self._executor.submit(self._backend.status).result(timeout=ADDRESS_TIMEOUT)
        except (EdgeAgentError, TimeoutError) as exc:
            log.debug("no Wi-Fi address for the Improv URL: %s", exc)
            return None
        return status.ip_address

    def open_window(self) -> None:
        """(Re)open the provisioning window and the LAN API, e.g. to change networks.

        The attempt limiter lives on across windows, so reopening never resets a
        lockout.
        """
        with self._lock:
            self.window.open(self._clock.now())
        self._start_lan()

    def _start_lan(self) -> None:
        if self.lan_core is None or self.lan is not None:
            return
        settings = self._settings
        try:
            self.lan = LanApiServer(
                self.lan_core,
                self._scan,
                lambda credentials: self.submit(credentials, "lan"),
                self._clock,
                (settings.lan_bind_address, settings.lan_port),
                lock=self._lock,
                bind_owner=self._bind_over_lan,
                limits=ServerLimits(
                    max_connections=settings.lan_max_connections,
                    max_connections_per_source=settings.lan_max_connections_per_source,
                    timeout_seconds=settings.lan_timeout_seconds,
                ),
            )
        except TransportError as exc:
            log.warning("LAN provisioning API disabled: %s", exc)
            return
        self.lan.start()
        log.info("LAN provisioning API listening on port %d", self.lan.port)

    def status(self) -> dict[str, object]:
        with self._lock:
            window = self.window.state(self._clock.now()).value
        return {"provisioned": self.provisioned, "bound": self.bound, "window": window}

    def _device_info(self) -> DeviceInfo:
        device = self._config.device
        return DeviceInfo(
            FIRMWARE_NAME, _firmware_version(), device.hardware_class, device.serial_number
        )

    def _scan(self) -> list[AccessPoint]:
        """Recent scan results; a fresh scan at most every SCAN_CACHE_SECONDS."""
        now = self._clock.now()
        cached = self._scan_cache
        if cached is not None and 0 <= now - cached[0] < SCAN_CACHE_SECONDS:
            return cached[1]
        try:
            networks = self._executor.submit(self._backend.scan, SCAN_TIMEOUT).result()
        except EdgeAgentError as exc:
            log.warning("Wi-Fi scan failed: %s", exc)
            return []
        self._scan_cache = (now, networks)
        return networks

    def _bind_over_lan(self, request: OwnerBinding) -> str:
        # Called by the LAN API under self._lock, after the session proved the code.
        return self.provisioner.bind_owner(
            self.principals, request.account, request.owner_key, "lan"
        )

    def submit(self, credentials: WifiCredentials, channel: str) -> Future[ConnectResult]:
        """Queue a connection attempt; attempts never overlap."""
        future = self._executor.submit(self.provisioner.apply, credentials, channel)
        future.add_done_callback(self._after_connect)
        return future

    def _after_connect(self, done: Future[ConnectResult]) -> None:
        if done.exception() is None and done.result().ok:
            with self._lock:
                self.window.succeed(self._clock.now())

    def tick(self, now: float) -> Sequence[Event]:
        if self.lan is not None:
            with self._lock:
                state = self.window.state(now)
                closed_at = self.window.closed_at or now
            if state is not WindowState.OPEN and now - closed_at >= STATUS_GRACE_SECONDS:
                log.info("provisioning window %s; LAN API stopped", state.value)
                self.lan.stop()
                self.lan = None
        if self._frame_source is not None and self._scheduler.due(now) and self._wants_qr():
            frame = self._frame_source()
            if frame is not None:
                self._decode(frame, now)
        return ()

    def _wants_qr(self) -> bool:
        # Asked only when a scan is due: `bound` is a database query.
        return not self.provisioned or not self.bound or self._reopened()

    def offer_frame(self, frame: Frame, now: float) -> QrOutcome | None:
        """Called by the camera pipeline with every frame; decodes about once per interval."""
        if not self._scheduler.due(now) or not self._wants_qr():
            return None
        return self._decode(frame, now)

    def _decode(self, frame: Frame, now: float) -> QrOutcome | None:
        try:
            text = self._reader.read(frame)
        except BadDataError as exc:
            log.debug("QR read failed: %s", exc)
            return None
        if text is None:
            return None
        outcome = self.qr.handle_text(text, now)
        if outcome.kind is QrKind.WIFI and outcome.credentials is not None:
            if self.provisioned and not self._reopened():
                reason = "already provisioned; the owner must reopen provisioning first"
                log.info("Wi-Fi QR code ignored: %s", reason)
                return QrOutcome(QrKind.REJECTED, reason=reason)
            self.submit(outcome.credentials, "qr")
        elif outcome.kind is QrKind.BINDING and outcome.binding is not None:
            request = outcome.binding
            try:
                self.provisioner.bind_owner(
                    self.principals, request.account, request.owner_key, "qr"
                )
            except PolicyError as exc:
                # The token is spent (it was recorded before acting): a QR that
                # cannot bind must not be tried again either.
                log.info("binding QR refused: %s", exc)
                return QrOutcome(QrKind.REJECTED, reason=str(exc))
        elif outcome.kind is QrKind.REJECTED:
            log.info("QR code ignored: %s", outcome.reason)
        return outcome

    def stop(self) -> None:
        if self.lan is not None:
            self.lan.stop()
            self.lan = None
        if self._button is not None:
            self._button.stop()
            self._button = None
        if self.improv is not None:
            self.improv.stop()
            self.improv = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._own_db is not None:
            self._own_db.close()
            self._own_db = None


def _principal_store(
    config: AgentConfig, given: PrincipalStore | None
) -> tuple[PrincipalStore, Database | None]:
    """The agent passes its own store; standalone (tests, tools) the service opens one."""
    if given is not None:
        return given, None
    db = Database.in_state_dir(config.state_dir)
    from agent.keystore import DataKeys  # the light CLI paths never load the crypto stack

    return PrincipalStore(db, DataKeys(StateLayout(config.state_dir))), db


def command_handlers(service: ProvisioningService) -> dict[str, CommandHandler]:
    """MQTT commands: ``provisioning.status`` and ``provisioning.open_window``."""

    def status(_: CommandArgs) -> CommandResult:
        return service.status()

    def open_window(_: CommandArgs) -> CommandResult:
        service.open_window()
        return service.status()

    return {"provisioning.status": status, "provisioning.open_window": open_window}


def build_service(
    config: AgentConfig,
    wifi_backend: WifiBackend,
    frame_source: Callable[[], Frame | None] | None = None,
    audit: AuditSink | None = None,
    *,
    clock: Clock | None = None,
    principals: PrincipalStore | None = None,
    on_attempt: Callable[[WifiCredentials], None] | None = None,
    keys: DataKeys | None = None,
) -> ProvisioningService:
    """``on_attempt`` hears of every Wi-Fi attempt first (the agent: the log redactor).

    ``keys``: the agent's data keys (the saved network is sealed under ``wifi``);
    the agent always passes its own, so that a key rotation sees every user.
    """
    return ProvisioningService(
        config,
        wifi_backend,
        audit=audit,
        frame_source=frame_source,
        clock=clock,
        principals=principals,
        on_attempt=on_attempt,
        keys=keys,
    )
