"""The agent's exception tree.

Two roots, as in python-tuf's ngclient:

* :class:`BadDataError` -- the input itself is wrong (malformed CBOR, a bad
  signature, an unknown config key, a hostile XML datagram).  Retrying the same
  bytes can never succeed, so callers never retry these.
* :class:`TransportError` -- talking to something failed (broker away, serial
  port timed out, HTTP connection cut).  Callers retry these with backoff.

Drivers wrap every foreign exception (``OSError``, ``serial.SerialException``,
paho error codes, ``cv2.error`` ...) into one of these at the boundary, so the
core only ever has to handle this tree.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose."""


# --- bad data: never retried -------------------------------------------------


class BadDataError(EdgeAgentError):
    """The data is wrong; the same bytes will fail the same way again."""


class ConfigError(BadDataError):
    """A configuration file or value is invalid.

    ``path`` is the dotted key path (``mqtt.port``) so the operator can find it.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class DecodeError(BadDataError):
    """Bytes from outside could not be parsed (CBOR, XML, AT reply, QR text...)."""


class TooLargeError(DecodeError):
    """Input exceeded a length or depth cap before it was fully parsed."""


class VerificationError(BadDataError):
    """A signature, digest, checksum or proof did not verify."""


class PolicyError(BadDataError):
    """The data is well formed but a rule forbids acting on it.

    Examples: a rollback manifest, a purpose without consent, a wrong class id.
    """


class ConsentRequiredError(PolicyError):
    """The operation needs a consent purpose that is not granted."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        super().__init__(f"purpose {purpose!r} is not consented")


class NotFoundError(BadDataError):
    """A named item (identity, network, slot, message) does not exist."""


class StateDirError(EdgeAgentError):
    """The state directory cannot be used: a file, read-only, or not this user's.

    Neither bad data nor worth retrying: someone has to fix the machine, so the
    command line exits with its own code (``EXIT_STATE_DIR`` in
    ``drivers/cli``) and the systemd unit does not restart on it.
    """

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"state directory {path}: {problem}; fix: {fix}")


# --- transport: retried with backoff -----------------------------------------


class TransportError(EdgeAgentError):
    """Talking to a peer, device or the OS failed; trying again may work."""


class ConnectionLostError(TransportError):
    """A connection could not be made or dropped while in use."""


class DeviceTimeoutError(TransportError):
    """A peer or device did not answer in time."""


class DeviceIOError(TransportError):
    """Reading or writing a device, file system or socket failed."""


def is_retryable(error: BaseException) -> bool:
    """True for errors worth retrying with backoff."""
    return isinstance(error, TransportError)
