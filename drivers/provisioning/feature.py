"""The provisioning feature: the device's binding, Wi-Fi credentials and the installer channels.

The verification code exists from first boot on, provisioned or not: the
label and the technician's console login both need it.  The channels (LAN
API, Improv serial, QR codes shown to the camera) run only on a daemon with a
Wi-Fi backend configured.  Wi-Fi credentials and the cloud binding are
personal data erased only when an erasure asks for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.errors import EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding
from agent.ports import Service
from agent.provisioning.settings import WifiBackendKind
from agent.rights.registry import ErasureScope
from drivers.logs.files import FileHolder
from drivers.provisioning.store import FileProvisioningStore, load_or_create_binding

log = logging.getLogger(__name__)


def build_provisioning(ctx: FeatureContext) -> Feature:
    layout = ctx.layout
    store = FileProvisioningStore(layout.root)
    holdings = (
        Holding(FileHolder("wifi_credentials", layout.wifi_credentials), scope=ErasureScope.WIFI),
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
    service = build_service(ctx.config, backend, audit=ctx.audit, clock=ctx.clock)
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
        holdings=holdings,
        secrets=secrets,
        closers=(backend.close,),
    )
