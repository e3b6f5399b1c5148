"""Wiring of the ONVIF device service from the configuration (no protocol logic here)."""

from __future__ import annotations

from agent import __version__
from agent.config import AgentConfig, CameraSource
from agent.discovery.onvif_auth import Authenticator
from agent.discovery.onvif_device import DeviceIdentity, OnvifDevice, Paths
from agent.discovery.onvif_media import Media, MediaSource
from agent.discovery.responder import device_target
from agent.layout import StateLayout
from agent.ports import Clock
from agent.provisioning.limits import AttemptLimiter
from drivers.discovery.onvif_server import OnvifHttpServer, hostname, network_interfaces
from drivers.discovery.onvif_store import OnvifCredentialStore
from drivers.httpserve import ServerLimits
from drivers.limitstore import LimitStore


def media_source(config: AgentConfig) -> MediaSource:
    """The stream the media services offer: the override, else the camera's RTSP source."""
    settings, camera = config.discovery, config.camera
    stream = settings.onvif_stream_uri
    if not stream and camera.source is CameraSource.RTSP:
        stream = camera.uri if camera.uri.lower().startswith(("rtsp://", "rtsps://")) else ""
    return MediaSource(
        stream_uri=stream,
        snapshot_uri=settings.onvif_snapshot_uri,
        width=camera.width,
        height=camera.height,
        fps=camera.fps,
    )


def onvif_limiter(config: AgentConfig, clock: Clock) -> AttemptLimiter:
    """Failed digests and lockouts, kept across restarts (limits/onvif-auth.json)."""
    settings = config.discovery
    limiter = AttemptLimiter(
        settings.onvif_max_failed_auth,
        settings.onvif_failure_window_seconds,
        settings.onvif_lockout_seconds,
        settings.onvif_lockout_max_seconds,
    )
    LimitStore.attach(
        StateLayout(config.state_dir).onvif_auth_limits, limiter, clock, "ONVIF login limiter"
    )
    return limiter


def build_onvif_device(
    config: AgentConfig, clock: Clock, store: OnvifCredentialStore, *, started_at: float
) -> OnvifDevice:
    settings, device = config.discovery, config.device
    target = device_target(
        serial_number=device.serial_number,
        model=device.model,
        hardware=device.hardware_class,
        xaddrs=(),
        metadata_version=settings.metadata_version,
        extra_scopes=settings.extra_scopes,
    )
    identity = DeviceIdentity(
        manufacturer=settings.onvif_manufacturer,
        model=device.model,
        firmware_version=__version__,
        serial_number=device.serial_number,
        hardware_id=device.hardware_class,
        scopes=target.scopes,
    )
    authenticator = Authenticator(
        store.load,
        onvif_limiter(config, clock),
        skew_seconds=settings.onvif_clock_skew_seconds,
        started_at=started_at,
        max_nonces=settings.onvif_max_nonces,
    )
    return OnvifDevice(
        identity,
        Media(media_source(config)),
        authenticator,
        hostname=hostname,
        interfaces=network_interfaces,
        max_body_bytes=settings.onvif_max_body_bytes,
        paths=Paths(device=settings.xaddrs_path),
    )


def build_onvif_server(
    config: AgentConfig, clock: Clock, store: OnvifCredentialStore, *, started_at: float
) -> OnvifHttpServer:
    settings = config.discovery
    return OnvifHttpServer(
        build_onvif_device(config, clock, store, started_at=started_at),
        (settings.interface_address, settings.http_port),
        clock=clock,
        limits=ServerLimits(
            max_connections=settings.onvif_max_connections,
            max_connections_per_source=settings.onvif_max_connections_per_source,
            timeout_seconds=settings.onvif_timeout_seconds,
        ),
    )
