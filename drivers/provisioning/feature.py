"""The provisioning feature: the device's binding, Wi-Fi credentials and the installer channels.

The verification code exists from first boot on, provisioned or not: the
label and the technician's console login both need it.  The channels (LAN
API, Improv serial, QR codes shown to the camera) run only on a daemon with a
Wi-Fi backend configured.  Wi-Fi credentials and the cloud binding are
personal data erased only when an erasure asks for them; erasing the Wi-Fi
credentials also removes the network from the backend.  Every SSID and
passphrase tried, connected or not, is handed to the log redactor first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from agent.auth.roles import Role
from agent.errors import EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding
from agent.ports import Service
from agent.provisioning.settings import ProvisioningSettings, WifiBackendKind
from agent.provisioning.wifi import ForgetsNetworks, WifiBackend
from agent.rights.registry import ErasureScope
from drivers.logs.files import FileHolder
from drivers.provisioning.store import (
    FileProvisioningStore,
    WifiCredentialsHolder,
    load_or_create_binding,
)

log = logging.getLogger(__name__)

# An installer the owner granted may look at provisioning and reopen the window
# (e.g. to move the device to another network); the owner always may.
INSTALLER_COMMANDS = {
    "provisioning.status": frozenset({Role.INSTALLER}),
    "provisioning.open_window": frozenset({Role.INSTALLER}),
}


def build_provisioning(ctx: FeatureContext) -> Feature:
    layout = ctx.layout
    store = FileProvisioningStore(layout.root, keys=ctx.keys)
    # The daemon's open backend, once there is one; an erasure from the CLI opens its own.
    opened: list[WifiBackend] = []
    forget = network_remover(ctx.config.provisioning, opened)
    holdings = (
        Holding(WifiCredentialsHolder(store, forget), scope=ErasureScope.WIFI),
        Holding(FileHolder("binding", *layout.account_files), scope=ErasureScope.BINDING),
    )

    def secrets() -> Iterable[str]:
        try:
            saved = store.load_credentials()
        except EdgeAgentError:
            return []
        return [] if saved is None else [saved.ssid]

    if not ctx.daemon:
        return Feature("provisioning", holdings=holdings, secrets=secrets)
    load_or_create_binding(layout.root, ctx.config.device.serial_number)
    try:
        if store.drop_stored_passphrase():
            log.info("wifi.json no longer keeps the Wi-Fi passphrase (the backend does)")
    except EdgeAgentError as exc:
        log.warning("could not check wifi.json for a stored passphrase: %s", exc)
    if ctx.config.provisioning.wifi_backend is WifiBackendKind.NONE:
        return Feature("provisioning", holdings=holdings, secrets=secrets)
    # lazy: heavy (numpy for QR frames, the backend's own modules)
    from drivers.provisioning.service import build_service, command_handlers
    from drivers.wifi import open_backend

    try:
        backend = open_backend(ctx.config.provisioning)
    except EdgeAgentError as exc:
        log.error("Wi-Fi backend unavailable, provisioning off: %s", exc)
        return Feature("provisioning", holdings=holdings, secrets=secrets)
    opened.append(backend)
    service = build_service(
        ctx.config,
        backend,
        audit=ctx.audit,
        clock=ctx.clock,
        principals=ctx.principals,
        # Every SSID and passphrase tried, even in vain, is redacted from then on.
        on_attempt=lambda tried: ctx.redactor.remember(tried.ssid, tried.passphrase),
        keys=ctx.keys,
    )
    services: tuple[Service, ...] = (service,)
    if ctx.config.camera.enabled:
        # lazy: heavy (cv2), loaded with the camera anyway
        from drivers.camera.services import FrameFeed

        qr = FrameFeed("provisioning-qr", service.offer_frame)
        ctx.frames.subscribe("provisioning-qr", qr.latest.offer)
        services = (service, qr)
    return Feature(
        "provisioning",
        services=services,
        commands=command_handlers(service),
        command_roles=INSTALLER_COMMANDS,
        holdings=holdings,
        secrets=secrets,
        closers=(backend.close,),
    )


def network_remover(
    settings: ProvisioningSettings, opened: list[WifiBackend]
) -> Callable[[str | None], int] | None:
    """What an erasure calls to remove the saved network from the Wi-Fi backend."""
    if settings.wifi_backend is WifiBackendKind.NONE:
        return None

    def forget(ssid: str | None) -> int:
        if opened:
            return _forget_with(opened[0], ssid)
        # lazy: the backend's own modules
        from drivers.wifi import open_backend

        backend = open_backend(settings)
        try:
            return _forget_with(backend, ssid)
        finally:
            backend.close()

    return forget


def _forget_with(backend: WifiBackend, ssid: str | None) -> int:
    if not isinstance(backend, ForgetsNetworks):
        log.warning("this Wi-Fi backend cannot remove the network it saved")
        return 0
    return backend.forget(ssid)
