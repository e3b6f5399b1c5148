"""Upgrade-specific refinements of the agent's error tree (all BadDataError)."""

from __future__ import annotations

from agent.errors import (
    ConnectionLostError,
    DecodeError,
    DeviceTimeoutError,
    PolicyError,
    VerificationError,
)


class UnsupportedFeatureError(PolicyError):
    """The manifest uses a SUIT feature this device does not implement."""


class UnsupportedAlgorithmError(PolicyError):
    """The signature algorithm is not enabled by policy (or unknown)."""


class RollbackError(PolicyError):
    """The manifest's sequence number is not newer than the installed one."""


class FailedReleaseError(PolicyError):
    """The sequence failed verification or its trial here; only a forced apply retries it."""


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


class RedirectError(PolicyError):
    """A redirect the downloader will not follow: a loop, too many hops, https -> http."""


class ServerBusyError(ConnectionLostError):
    """The server asked to come back later (429/503); ``retry_after`` in seconds, if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadSignatureError(VerificationError):
    """A signature names (or is made for) a trusted key but does not verify."""


class UnknownKeyError(VerificationError):
    """The envelope is signed, but by no key this device trusts."""
