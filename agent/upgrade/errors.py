"""Upgrade-specific refinements of the agent's error tree (all BadDataError)."""

from __future__ import annotations

from agent.errors import DecodeError, DeviceTimeoutError, PolicyError, VerificationError


class UnsupportedFeatureError(PolicyError):
    """The manifest uses a SUIT feature this device does not implement."""


class UnsupportedAlgorithmError(PolicyError):
    """The signature algorithm is not enabled by policy (or unknown)."""


class RollbackError(PolicyError):
    """The manifest's sequence number is not newer than the installed one."""


class ExpiredManifestError(PolicyError):
    """The manifest is past its expiry (freeze attack or stale mirror)."""


class WrongHardwareError(PolicyError):
    """The manifest is for another vendor or device class."""


class PrecursorMismatchError(PolicyError):
    """A delta's precursor digest differs from the installed image's digest."""


class ImageMismatchError(VerificationError):
    """The image's bytes or size differ from what the manifest signed."""


class ExtraDataError(ImageMismatchError):
    """The server sent more bytes than the manifest's image size."""


class StateFileError(DecodeError):
    """The persisted upgrade state is unreadable."""


class DeadlineExceededError(DeviceTimeoutError):
    """The whole download took longer than allowed; retrying cannot help."""
