"""Configuration of auto-upgrade (section ``[upgrade]``)."""

from __future__ import annotations

import dataclasses
import enum
import pathlib

from agent.upgrade.algorithms import SignatureAlgorithm
from agent.upgrade.window import parse_window

# SignatureAlgorithm is defined in algorithms (keys needs it without the settings)
# and re-exported here, next to the setting that names it.
__all__ = [
    "HawkbitSettings",
    "HawkbitTokenKind",
    "ManifestSource",
    "SignatureAlgorithm",
    "SlotBackend",
    "UpgradeSettings",
]


def _windows(value: object) -> str | None:
    if not isinstance(value, tuple):
        return "must be a list of 'HH:MM-HH:MM' strings"
    for item in value:
        try:
            parse_window(str(item))
        except ValueError as exc:
            return str(exc)
    return None


class SlotBackend(enum.Enum):
    FILE = "file"
    UBOOT = "uboot"
    GRUB = "grub"


class ManifestSource(enum.Enum):
    MANIFEST_URL = "manifest_url"  # poll upgrade.manifest_url for the newest envelope
    HAWKBIT = "hawkbit"  # an Eclipse hawkBit server assigns releases (DDI API)


class HawkbitTokenKind(enum.Enum):
    TARGET = "target"  # "Authorization: TargetToken ..." (one per device)
    GATEWAY = "gateway"  # "Authorization: GatewayToken ..." (one per tenant)


@dataclasses.dataclass(frozen=True)
class HawkbitSettings:
    """``[upgrade.hawkbit]``: the DDI client used when ``upgrade.source = "hawkbit"``.

    Attributes:
        server_url: The hawkBit server, e.g. ``https://hawkbit.example.com``.
        tenant: hawkBit tenant.
        controller_id: The controllerId hawkBit knows this device by; empty:
            ``device.serial_number``.
        token_file: File holding the security token (never logged); unset: no
            Authorization header.
        token_kind: ``"target"`` (TargetToken, one per device) or ``"gateway"``
            (GatewayToken, one per tenant).
        envelope_suffix: File-name suffix of the artifact carrying the signed SUIT
            envelope; the other artifact is the image.
        min_poll_seconds: Shortest polling interval accepted from the server.
        max_poll_seconds: Longest polling interval accepted from the server.
    """

    server_url: str = ""  # e.g. "https://hawkbit.example.com"
    tenant: str = "DEFAULT"
    # The controllerId hawkBit knows this device by; "" = device.serial_number.
    controller_id: str = ""
    # File holding the security token (never logged); None = no Authorization header.
    token_file: pathlib.Path | None = None
    token_kind: HawkbitTokenKind = HawkbitTokenKind.TARGET
    # The artifact carrying the signed SUIT envelope; the other artifact is the image.
    envelope_suffix: str = ".suit"
    # Bounds on the server's polling interval (config.polling.sleep).
    min_poll_seconds: int = dataclasses.field(default=10, metadata={"min": 1, "max": 86400})
    max_poll_seconds: int = dataclasses.field(default=86400, metadata={"min": 1, "max": 7 * 86400})


@dataclasses.dataclass(frozen=True)
class UpgradeSettings:
    """Signed over-the-air upgrades of firmware and models, A/B slots and rollback.

    Attributes:
        enabled: Check for, download and install upgrades.
        auto_install_models: Device models (``device.model``) that install a verified
            release without the owner's command; others wait for the owner's install command.
        manifest_url: Where the newest signed envelope for this device is published;
            empty: no periodic check.
        ca_file: CA bundle that replaces the system trust store for https manifest and
            image servers (a private PKI); unset: the system CAs.
        extra_ca_file: CA bundle added to the trust store (system CAs or ``ca_file``),
            e.g. for a private mirror next to a public CDN.
        max_redirects (redirects): HTTP redirects followed per request; the digest
            still decides what is installed.
        allow_https_to_http_redirects: Follow a redirect from https to plain http
            (off: such a redirect fails the download).
        check_interval_seconds: How often ``manifest_url`` is polled.
        trusted_keys: PEM public keys trusted initially; key rotations are kept in the
            state directory.
        accepted_algorithms: Signature algorithms accepted on envelopes.
        vendor_domain: DNS name the SUIT vendor id is derived from (UUID5); the class id
            also takes ``device.hardware_class``.
        maintenance_windows: Local-time windows like ``"02:00-04:00"`` (may cross
            midnight) in which an install may start; empty: any time.
        max_deferral_seconds: Longest an owner may defer an install.
        slot_backend: Where the A/B boot state lives: ``"file"`` (simulated slots under
            the state directory), ``"uboot"`` (fw_printenv/fw_setenv) or ``"grub"``
            (grub-editenv).
        slot_a_path: Block device (or file) of slot a; unset: a file under the state
            directory.
        slot_b_path: Block device (or file) of slot b; unset: a file under the state
            directory.
        uboot_env_config: fw_env.config for fw_printenv/fw_setenv; unset:
            ``/etc/fw_env.config``.
        uboot_default_env: The board's default U-Boot environment (name=value lines) a
            blank environment reads as; unset: the tool's ``/etc/u-boot-initial-env``.
        grub_env_path: GRUB environment block (``slot_backend = "grub"``).
        boot_limit (boots): Boots of a new slot that may fail before the bootloader
            falls back to the old one.
        max_manifest_bytes: Largest envelope/manifest downloaded.
        max_image_bytes: Largest image downloaded.
        min_throughput_bytes_per_second: A download slower than this (after the grace
            period) is abandoned and retried.
        throughput_grace_seconds: Time a download may stay under the minimum rate.
        download_deadline_seconds: Longest a whole download may take.
        io_timeout_seconds: Longest wait for any network read or write.
        download_attempts (attempts): Tries per download before the release fails.
        health_grace_seconds: Time a trial boot has to become healthy (broker link up,
            every service beating) before it is rolled back.
        reboot_command: Command (program and arguments) that reboots into the new slot.
        source: Where releases come from: ``"manifest_url"`` or ``"hawkbit"``
            (``[upgrade.hawkbit]``).
    """

    enabled: bool = True
    auto_install_models: tuple[str, ...] = ()
    # Where the newest signed envelope for this device is published; "" = no periodic check.
    manifest_url: str = ""
    # CA bundle that REPLACES the system trust store for https manifest/image servers
    # (a private PKI only); None = the system CAs.
    ca_file: pathlib.Path | None = None
    # CA bundle ADDED to the trust store (system CAs, or ca_file): a private mirror
    # next to a CDN on public CAs.
    extra_ca_file: pathlib.Path | None = None
    # Redirects followed per request (CDNs, presigned URLs); the digest still decides.
    max_redirects: int = dataclasses.field(default=5, metadata={"min": 0, "max": 20})
    # Follow a redirect from https to plain http (off: such a redirect fails the download).
    allow_https_to_http_redirects: bool = False
    check_interval_seconds: int = dataclasses.field(
        default=6 * 3600, metadata={"min": 60, "max": 7 * 86400}
    )
    # PEM public keys trusted initially; rotations are persisted under state_dir.
    trusted_keys: tuple[pathlib.Path, ...] = ()
    accepted_algorithms: tuple[SignatureAlgorithm, ...] = (
        SignatureAlgorithm.ED25519,
        SignatureAlgorithm.EDDSA,
    )
    # vendor-id = UUID5(DNS, vendor_domain); class-id = UUID5(vendor-id, device.hardware_class).
    vendor_domain: str = "edge-agent.example"
    # Local-time windows like "02:00-04:00" (may cross midnight); empty = any time.
    maintenance_windows: tuple[str, ...] = dataclasses.field(
        default=(), metadata={"check": _windows}
    )
    max_deferral_seconds: int = dataclasses.field(
        default=7 * 86400, metadata={"min": 0, "max": 90 * 86400}
    )
    slot_backend: SlotBackend = SlotBackend.FILE
    # Block devices (or files) of slots a and b; None = files under state_dir/upgrade/slots.
    slot_a_path: pathlib.Path | None = None
    slot_b_path: pathlib.Path | None = None
    # fw_env.config for fw_printenv/fw_setenv (None = /etc/fw_env.config).
    uboot_env_config: pathlib.Path | None = None
    # The board's default U-Boot environment (name=value lines) a blank environment
    # reads as (fw_printenv -f); None = the tool's /etc/u-boot-initial-env.
    uboot_default_env: pathlib.Path | None = None
    grub_env_path: pathlib.Path = pathlib.Path("/boot/grub/grubenv")
    boot_limit: int = dataclasses.field(default=3, metadata={"min": 1, "max": 20})
    max_manifest_bytes: int = dataclasses.field(
        default=64 * 1024, metadata={"min": 512, "max": 1024 * 1024}
    )
    max_image_bytes: int = dataclasses.field(
        default=2 * 1024**3, metadata={"min": 1024, "max": 64 * 1024**3}
    )
    min_throughput_bytes_per_second: int = dataclasses.field(
        default=4096, metadata={"min": 1, "max": 1024**3}
    )
    throughput_grace_seconds: float = dataclasses.field(
        default=10.0, metadata={"min": 0.1, "max": 3600}
    )
    download_deadline_seconds: float = dataclasses.field(
        default=3600.0, metadata={"min": 1, "max": 7 * 86400}
    )
    io_timeout_seconds: float = dataclasses.field(default=30.0, metadata={"min": 0.1, "max": 600})
    download_attempts: int = dataclasses.field(default=5, metadata={"min": 1, "max": 100})
    health_grace_seconds: float = dataclasses.field(
        default=120.0, metadata={"min": 0, "max": 86400}
    )
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    # Where releases come from: manifest_url (above) or a hawkBit server ([upgrade.hawkbit]).
    source: ManifestSource = ManifestSource.MANIFEST_URL
    hawkbit: HawkbitSettings = HawkbitSettings()
