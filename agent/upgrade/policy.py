"""Upgrade policy: which manifests may be installed, and when.

Pure: the caller passes the device identity, the installed state and the
current time (``now`` as epoch seconds, ``local_minute`` as minutes since
local midnight -- the driver reads the clock and the time zone).
"""

from __future__ import annotations

import dataclasses
import hmac
import uuid
from collections.abc import Iterable

from agent.errors import DecodeError
from agent.upgrade.errors import (
    ExpiredManifestError,
    FailedReleaseError,
    PrecursorMismatchError,
    RollbackError,
    UnsupportedFeatureError,
    WrongHardwareError,
)
from agent.upgrade.manifest import Manifest
from agent.upgrade.window import MINUTES_PER_DAY, parse_window


def in_maintenance_window(windows: Iterable[str], local_minute: int) -> bool:
    parsed = [parse_window(w) for w in windows]
    return not parsed or any(w.contains(local_minute % MINUTES_PER_DAY) for w in parsed)


def auto_install_allowed(enabled: bool, models: Iterable[str], model: str) -> bool:
    return enabled and model in set(models)


@dataclasses.dataclass(frozen=True)
class DeviceIdentity:
    vendor_id: uuid.UUID
    class_id: uuid.UUID


@dataclasses.dataclass(frozen=True)
class InstalledImage:
    sequence: int  # -1 before the first managed install
    digest: bytes | None


def check_manifest(
    manifest: Manifest,
    device: DeviceIdentity,
    installed: InstalledImage,
    now: float,
    *,
    fetches_uri: bool = True,
) -> None:
    """Raise a PolicyError subclass unless ``manifest`` may be installed on this device now.

    ``fetches_uri`` False: the image comes from a local file (an offline install),
    so the URI is never fetched and any scheme (``file:``, a vendor's own) is fine.
    """
    if manifest.uri is None or manifest.image_digest is None or manifest.image_size is None:
        raise UnsupportedFeatureError("manifest has no installable image (uri, digest and size)")
    if not (manifest.checks_vendor and manifest.checks_class and manifest.checks_image):
        raise UnsupportedFeatureError("manifest must check vendor id, class id and image digest")
    if manifest.vendor_id != device.vendor_id:
        raise WrongHardwareError(f"manifest is for vendor {manifest.vendor_id}, not ours")
    if manifest.class_id != device.class_id:
        raise WrongHardwareError(f"manifest is for class {manifest.class_id}, not this device")
    if manifest.sequence <= installed.sequence:
        raise RollbackError(
            f"sequence {manifest.sequence} is not newer than installed {installed.sequence}"
        )
    if manifest.expires_at is not None and now >= manifest.expires_at:
        raise ExpiredManifestError(f"manifest expired at {manifest.expires_at}")
    if manifest.precursor_digest is not None and (
        installed.digest is None
        or not hmac.compare_digest(manifest.precursor_digest, installed.digest)
    ):
        raise PrecursorMismatchError("the installed image is not the delta's precursor")
    if fetches_uri and not manifest.uri.startswith(("http://", "https://")):
        raise UnsupportedFeatureError(f"uri scheme of {manifest.uri[:60]!r} is not http(s)")


def check_not_failed(sequence: int, failure: str | None, *, force: bool) -> None:
    """Refuse a sequence that failed here before (``failure`` not None) unless forced."""
    if failure is None or force:
        return
    why = f" ({failure})" if failure else ""
    raise FailedReleaseError(
        f"sequence {sequence} failed on this device before{why}; "
        "it is installed again only by an apply with force"
    )


def deferral_until(requested_seconds: object, now: float, max_seconds: int) -> float:
    if not isinstance(requested_seconds, int | float) or isinstance(requested_seconds, bool):
        raise DecodeError("defer_seconds must be a number")
    if not 0 <= requested_seconds <= max_seconds:
        raise DecodeError(f"defer_seconds must be between 0 and {max_seconds}")
    return now + float(requested_seconds)
