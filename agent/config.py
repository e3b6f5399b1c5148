"""The agent's configuration: frozen dataclasses, loaded strictly from TOML.

Only :func:`load` and :func:`load_file` read files or the environment.  Every
default lives on the dataclasses, so an empty file is a valid configuration
(the embedded default used by ``make run``); ``config/agent.toml`` documents
the same values.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import pathlib
import tomllib
from collections.abc import Mapping

from agent.configschema import build
from agent.discovery.settings import DiscoverySettings
from agent.errors import ConfigError
from agent.logs.settings import LogSettings, RetentionSettings
from agent.matching.settings import MatchingSettings
from agent.provisioning.settings import ProvisioningSettings
from agent.storage_settings import StorageSettings
from agent.upgrade.settings import UpgradeSettings

MAX_CONFIG_BYTES = 256 * 1024


def _topic_segment(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if any(c in value for c in "/+#\x00") or len(value) > 64:
        return "must not contain '/', '+', '#' or NUL and be at most 64 characters"
    return None


def _topic_prefix(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if any(c in value for c in "+#\x00") or value.startswith("/") or value.endswith("/"):
        return "must not contain '+', '#', NUL or start/end with '/'"
    return None


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """The device's identity.

    Attributes:
        serial_number: The device's serial number, as printed on its label; used in
            the provisioning QR code and as an MQTT topic segment (no ``/``, ``+``, ``#``,
            at most 64 characters). Events never carry it in clear.
        model: Model name, shown by discovery (ONVIF, mDNS) and matched against
            ``upgrade.auto_install_models``.
        hardware_class: Hardware revision; with ``upgrade.vendor_domain`` it gives the
            SUIT class id an upgrade must name to be installed here.
    """

    serial_number: str = dataclasses.field(
        default="EA-SAMPLE-0001", metadata={"check": _topic_segment}
    )
    model: str = "edge-cam-1"
    hardware_class: str = "edge-cam-1/rev-a"


class TlsMode(enum.Enum):
    OFF = "off"
    ON = "on"


class PayloadFormat(enum.Enum):
    JSON = "json"
    CBOR = "cbor"


def is_loopback_host(host: str) -> bool:
    """True only for ``localhost`` or a literal address in 127.0.0.0/8 or ::1.

    Never resolves a name (``agent/`` does no I/O, and a resolver answer could
    change after the check): any other name counts as remote.
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    """The connection to the MQTT broker that carries events and commands.

    Attributes:
        enabled: Connect to the broker at all; off, events wait in the outbox.
        host: Broker host name or address.
        port: Broker TCP port (8883: MQTT over TLS; 1883 for a plaintext local broker).
        topic_prefix: First segments of every topic (``<prefix>/<device>/...``);
            no ``+``, ``#`` or leading/trailing ``/``.
        client_id: MQTT client id; unset: derived from the device id.
        username: User name for the broker; unset: none sent.
        password_file: File holding the broker password (surrounding whitespace
            stripped); unset: none sent.
        tls: TLS to the broker. ``"off"`` is accepted only for a loopback broker unless
            ``allow_plaintext`` is true.
        allow_plaintext: Accept ``tls = "off"`` to a broker on another host; events,
            commands and credentials then cross the network unencrypted (warned in the
            log and in every ``status`` reply).
        ca_file: PEM CA bundle that verifies the broker; unset: the system's CA store.
        cert_file: PEM client certificate for mutual TLS (needs ``tls = "on"``).
        key_file: PEM private key of ``cert_file``.
        keepalive_seconds: MQTT keep-alive interval.
        reconnect_min_seconds: Backoff before the first reconnection attempt (randomised
            down to half of it); doubled after each failure.
        reconnect_max_seconds: Longest delay between reconnection attempts.
        max_inflight (messages): Published messages awaiting the broker's
            acknowledgement at once.
        max_command_bytes: Largest command payload accepted; larger ones are refused
            unread.
        payload_format: Encoding of published events: ``"json"`` (content type
            ``application/json``; byte strings such as ``img`` as base64 text) or
            ``"cbor"`` (``application/cbor``, smaller). Commands are accepted in either
            and answered in the request's format.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    # 8883: MQTT over TLS (IANA); config/dev.toml sets 1883 for a local plaintext broker.
    port: int = dataclasses.field(default=8883, metadata={"min": 1, "max": 65535})
    topic_prefix: str = dataclasses.field(default="edge", metadata={"check": _topic_prefix})
    client_id: str | None = None
    username: str | None = None
    password_file: pathlib.Path | None = None
    tls: TlsMode = TlsMode.ON
    # Plaintext to a broker off this host only when the owner says so, in writing.
    allow_plaintext: bool = False
    ca_file: pathlib.Path | None = None
    # A client certificate (mutual TLS) is the device's identity to a broker that asks.
    cert_file: pathlib.Path | None = None
    key_file: pathlib.Path | None = None
    keepalive_seconds: int = dataclasses.field(default=30, metadata={"min": 5, "max": 3600})
    reconnect_min_seconds: float = dataclasses.field(
        default=0.5, metadata={"min": 0.05, "max": 60}
    )
    reconnect_max_seconds: float = dataclasses.field(
        default=30.0, metadata={"min": 0.1, "max": 3600}
    )
    max_inflight: int = dataclasses.field(default=200, metadata={"min": 1, "max": 65535})
    max_command_bytes: int = dataclasses.field(
        default=64 * 1024, metadata={"min": 256, "max": 16 * 1024 * 1024}
    )
    # JSON by default: what mosquitto_sub, Node-RED and Home Assistant read unaided.
    payload_format: PayloadFormat = PayloadFormat.JSON

    def __post_init__(self) -> None:
        # Here rather than in the CLI: every way to build a configuration (config
        # check, edge-agent run, a test's dataclasses.replace) meets the same refusal.
        if not self.enabled:
            return
        if self.tls is TlsMode.OFF:
            if self.cert_file is not None or self.key_file is not None:
                raise ConfigError("mqtt.cert_file", 'a client certificate needs tls = "on"')
            if not self.allow_plaintext and not is_loopback_host(self.host):
                raise ConfigError(
                    "mqtt.tls",
                    f"broker {self.host!r} is not on this host and tls is off: events and "
                    'credentials would cross the network in clear text; set tls = "on" '
                    "(or mqtt.allow_plaintext = true to accept that)",
                )
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("mqtt.key_file", "needs mqtt.cert_file")

    @property
    def plaintext_warning(self) -> str | None:
        """One line for the log and every ``status`` reply while plaintext leaves the host."""
        if self.enabled and self.tls is TlsMode.OFF and not is_loopback_host(self.host):
            return (
                f"MQTT to {self.host}:{self.port} is not encrypted (mqtt.allow_plaintext = true): "
                "events, commands and credentials cross the network in clear text"
            )
        return None


class TimestampPrecision(enum.Enum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"


@dataclasses.dataclass(frozen=True)
class PrivacySettings:
    """What leaves the device and how coarsely.

    Attributes:
        policy_version: Version of the privacy notice consents are given against;
            reported with the consent state.
        timestamp_precision: Events' timestamps are rounded down to this unit before
            they leave the device.
        max_event_bytes: Largest encoded event; a bigger one is sent without its image,
            or dropped if still too big.
        statistics_interval_seconds: How often aggregate statistics are published.
        statistics_min_count (events): k-anonymity threshold: a per-type count below
            it is left out of the statistics.
        audit_head_interval_seconds: How often the audit chain's head (index, MAC) is
            published as ``audit.head``, when it moved.
    """

    policy_version: str = "2026-11"
    timestamp_precision: TimestampPrecision = TimestampPrecision.SECOND
    max_event_bytes: int = dataclasses.field(
        default=256 * 1024, metadata={"min": 1024, "max": 16 * 1024 * 1024}
    )
    statistics_interval_seconds: int = dataclasses.field(
        default=3600, metadata={"min": 60, "max": 86400}
    )
    # k: a per-type count below this is left out of the statistics (it could single
    # someone out); see agent/stats.py.
    statistics_min_count: int = dataclasses.field(default=5, metadata={"min": 1, "max": 1000})
    # How often the audit chain's head is published (audit.head), when it moved.
    audit_head_interval_seconds: int = dataclasses.field(
        default=3600, metadata={"min": 1, "max": 86400}
    )


@dataclasses.dataclass(frozen=True)
class OutboxSettings:
    """The on-disk queue of messages waiting for the broker.

    Attributes:
        max_messages (messages): Queue capacity; when full, new events are refused
            (counted), never older ones silently dropped.
        default_expiry_seconds: How long a queued message stays deliverable when its
            event sets no expiry of its own; also sent as the MQTT message expiry.
        replay_batch (messages): Messages read from the queue per pass when catching up
            after an outage.
    """

    max_messages: int = dataclasses.field(default=100_000, metadata={"min": 1, "max": 10_000_000})
    default_expiry_seconds: int = dataclasses.field(
        default=7 * 86400, metadata={"min": 1, "max": 365 * 86400}
    )
    replay_batch: int = dataclasses.field(default=500, metadata={"min": 1, "max": 100_000})


class CameraSource(enum.Enum):
    SAMPLE = "sample"
    FILE = "file"
    RTSP = "rtsp"
    V4L2 = "v4l2"


def _rtp_transport(value: object) -> str | None:
    return None if value in ("tcp", "udp") else 'must be "tcp" or "udp"'


@dataclasses.dataclass(frozen=True)
class HubCamera:
    """One camera of an NVR hub (``[[camera.sources]]``).

    Attributes:
        name: The camera's name in events and in its state topic
            ``camera/<name>/motion`` (no ``/``, ``+``, ``#``, at most 64 characters).
        url: Its RTSP URL, without user or password (those are the owner's, set with
            the ``camera.set_credentials`` command and kept sealed).
        onvif: Instead of ``url``: the camera's ONVIF device service address
            (``http://host:port/onvif/device_service``); the hub asks it for the
            stream URI.
        profile: The ONVIF media profile token to stream; empty: the camera's first.
        transport: How RTP travels: ``"tcp"`` (interleaved in the RTSP connection) or
            ``"udp"``.
    """

    name: str = dataclasses.field(default="", metadata={"check": _topic_segment})
    url: str = ""
    onvif: str = ""
    profile: str = ""
    transport: str = dataclasses.field(default="tcp", metadata={"check": _rtp_transport})


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    """The camera, its capture rate and motion events.

    Attributes:
        enabled: Capture at all. Off: no motion, no faces or plates, no QR provisioning
            and no OpenCV in memory.
        source: Where frames come from: ``"sample"`` (built-in synthetic scene),
            ``"file"`` (a video file), ``"rtsp"`` (a network stream) or ``"v4l2"``
            (a local camera).
        uri: The file path, RTSP URL or V4L2 device (path or index) of ``source``;
            unused for ``"sample"``.
        fps (frames/s): Frames captured per second.
        width (px): Requested frame width (a file keeps its own size).
        height (px): Requested frame height (a file keeps its own size).
        queue_frames (frames): Frames the face/plate pipeline may have waiting; older
            ones are dropped when it falls behind.
        motion_update_seconds: While motion lasts, an ``update`` of its event is
            published at most this often (``new`` and ``end`` are never held back).
        sources: NVR hub mode: the cameras to capture (``[[camera.sources]]`` tables,
            see README "NVR hub"), each with its own capture, motion events and state
            topic, all feeding the one face/plate pipeline in turn. Empty: the one
            camera of ``source``/``uri``.
        hub_frames_per_tick (frames): Frames the hub hands the pipeline per main-loop
            pass, one camera after the other; a camera's frame not taken before its
            next one is dropped (and counted).
        adopt_discovered: NVR hub mode for cameras found on the LAN: a camera that
            answers WS-Discovery (on ``[discovery] interface_address``) becomes a source
            named after its ONVIF scopes, listed by ``camera.list`` as pending until the
            owner sets its credentials (``camera.set_credentials``); only then is it
            captured. On, the device is a hub even with no ``sources`` (``source`` and
            ``uri`` unused). Off: only ``sources``.
        adopt_max_cameras (cameras): Most cameras adopted; past it a camera that
            vanished before the owner gave it credentials makes room, else a new one
            is refused (and counted).
        adopt_probe_seconds: Time between the hub's WS-Discovery searches (a Hello
            heard on the LAN brings the next one forward).
        adopt_missing_probes (probes): Searches in a row an adopted camera may miss
            before its capture stops (a Bye stops it at once); it keeps its name.
        adopt_transport: How RTP travels from adopted cameras: ``"tcp"`` or ``"udp"``.
    """

    # Off: no capture, no motion, no faces, no QR provisioning (and no OpenCV in memory).
    enabled: bool = True
    source: CameraSource = CameraSource.SAMPLE
    uri: str = ""
    fps: float = dataclasses.field(default=5.0, metadata={"min": 0.1, "max": 60})
    width: int = dataclasses.field(default=640, metadata={"min": 16, "max": 8192})
    height: int = dataclasses.field(default=480, metadata={"min": 16, "max": 8192})
    queue_frames: int = dataclasses.field(default=4, metadata={"min": 1, "max": 256})
    motion_update_seconds: float = dataclasses.field(
        default=5.0, metadata={"min": 0.1, "max": 3600}
    )
    sources: tuple[HubCamera, ...] = ()
    hub_frames_per_tick: int = dataclasses.field(default=4, metadata={"min": 1, "max": 64})
    # Off by default: a camera on the LAN is captured only once the owner configured it.
    adopt_discovered: bool = False
    adopt_max_cameras: int = dataclasses.field(default=16, metadata={"min": 1, "max": 64})
    adopt_probe_seconds: float = dataclasses.field(
        default=60.0, metadata={"min": 1, "max": 86400}
    )
    adopt_missing_probes: int = dataclasses.field(default=3, metadata={"min": 1, "max": 100})
    adopt_transport: str = dataclasses.field(default="tcp", metadata={"check": _rtp_transport})

    def __post_init__(self) -> None:
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError("camera.sources", "camera names must be unique")
        for i, source in enumerate(self.sources):
            if not source.name:
                raise ConfigError(f"camera.sources[{i}].name", "must be set")
            if bool(source.url) == bool(source.onvif):
                raise ConfigError(f"camera.sources[{i}]", "needs exactly one of url or onvif")
            if source.url and "@" in source.url.partition("//")[2].partition("/")[0]:
                raise ConfigError(
                    f"camera.sources[{i}].url",
                    "must not carry a user or password (set them with camera.set_credentials)",
                )


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The main loop.

    Attributes:
        watchdog_fraction (-): Fraction of systemd's ``WatchdogSec`` after which the
            loop pings the watchdog.
        tick_seconds: Period of the main loop (services ticked, outbox pumped).
    """

    watchdog_fraction: float = dataclasses.field(default=0.5, metadata={"min": 0.1, "max": 0.9})
    tick_seconds: float = dataclasses.field(default=0.2, metadata={"min": 0.01, "max": 10})


DEFAULT_DISCOVERY_PREFIX = "homeassistant"


@dataclasses.dataclass(frozen=True)
class HomeAssistantSettings:
    """Home Assistant MQTT discovery (README "Home Assistant").

    Attributes:
        enabled: Publish discovery configs (retained) so Home Assistant lists the device
            and its entities. Unset: on exactly when ``discovery_prefix`` is set.
        discovery_prefix: Home Assistant's discovery prefix; unset with
            ``enabled = true``: ``"homeassistant"``.
        expose_serial: Show the device's serial number in Home Assistant's device
            registry (and so to everyone who can read the broker). Off: only the
            per-binding device id is used.
        configuration_url: Link shown on the device page in Home Assistant (for
            example the device's web page); empty: none.
    """

    enabled: bool | None = None
    discovery_prefix: str | None = dataclasses.field(
        default=None, metadata={"check": lambda v: None if v is None else _topic_prefix(v)}
    )
    expose_serial: bool = False
    configuration_url: str = ""

    @property
    def active(self) -> bool:
        return self.discovery_prefix is not None if self.enabled is None else self.enabled

    @property
    def prefix(self) -> str:
        return self.discovery_prefix or DEFAULT_DISCOVERY_PREFIX


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """The whole configuration: the top-level keys and one table per section.

    Attributes:
        state_dir: Directory of everything the agent keeps (databases, keys, galleries,
            snapshots, logs). ``--state-dir`` and systemd's ``$STATE_DIRECTORY`` override it.
    """

    state_dir: pathlib.Path = pathlib.Path("/var/lib/edge-agent")
    device: DeviceSettings = DeviceSettings()
    mqtt: MqttSettings = MqttSettings()
    privacy: PrivacySettings = PrivacySettings()
    outbox: OutboxSettings = OutboxSettings()
    storage: StorageSettings = StorageSettings()
    camera: CameraSettings = CameraSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    matching: MatchingSettings = MatchingSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    upgrade: UpgradeSettings = UpgradeSettings()
    logs: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()


def parse(text: str | bytes, source: str = "<config>") -> AgentConfig:
    """Parse TOML text into an :class:`AgentConfig`; raises ConfigError."""
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError("", f"{source}: larger than {MAX_CONFIG_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("", f"{source}: not UTF-8 ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{source}: invalid TOML: {exc}") from exc
    return from_mapping(data)


def from_mapping(data: Mapping[str, object]) -> AgentConfig:
    return build(AgentConfig, data)


def load_file(path: pathlib.Path) -> AgentConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse(raw, str(path))


def load(
    path: pathlib.Path | None,
    *,
    state_dir: pathlib.Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Load the configuration the way ``edge-agent`` does.

    ``path=None`` means the embedded defaults.  The state directory comes, in
    order of precedence, from ``state_dir``, systemd's ``$STATE_DIRECTORY``,
    then the file.
    """
    config = AgentConfig() if path is None else load_file(path)
    env = os.environ if environ is None else environ
    chosen = state_dir
    if chosen is None and env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        chosen = pathlib.Path(env["STATE_DIRECTORY"].split(":")[0])
    if chosen is not None:
        config = dataclasses.replace(config, state_dir=chosen)
    return config
