"""Small files that must survive power loss, and files that must not survive erasure.

Every store of the agent that keeps state in a plain file goes through here, so
there is one crash-safe write (temp file + fsync + os.replace + dir fsync), one
bounded read, one way to make a secret and one way to shred personal data.
"""

from __future__ import annotations

import os
import pathlib
import secrets

from agent.errors import DeviceIOError


def write_atomic(
    path: pathlib.Path, data: bytes, mode: int = 0o600, *, exclusive: bool = False
) -> None:
    """Replace ``path`` with ``data``: after a crash readers see the old or the new file.

    ``exclusive``: never replace; a hard link of the finished temp file makes
    exactly one of several racing writers win, and the others get
    :class:`FileExistsError` (keys that must never be silently replaced).
    """
    # A temp name of its own per write: two writers of one file (threads, or the
    # CLI next to the daemon) never share, truncate or rename each other's temp
    # file, and a leftover from a crash cannot lend its mode to a new secret.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        if not exclusive:
            raise DeviceIOError(f"cannot write {path}: temp file collision") from None
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DeviceIOError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_optional(path: pathlib.Path, max_bytes: int) -> bytes | None:
    """The file's bytes (at most ``max_bytes + 1``, so callers can see it is too big), or None."""
    try:
        with path.open("rb") as handle:
            return handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_or_create_secret(path: pathlib.Path, size: int = 32) -> bytes:
    """A random key kept in ``path`` (0600), made on first use; a damaged one is replaced."""
    existing = read_optional(path, size)
    if existing is not None and len(existing) == size:
        return existing
    secret = secrets.token_bytes(size)
    write_atomic(path, secret)
    return secret


def shred(path: pathlib.Path) -> bool:
    """Overwrite ``path`` with zeros, fsync, then unlink it; False if it did not exist."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    try:
        with open(path, "r+b") as handle:
            chunk = b"\0" * (1 << 20)
            left = size
            while left > 0:
                left -= handle.write(chunk[: min(left, len(chunk))])
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
    except OSError as exc:
        raise DeviceIOError(f"cannot erase {path}: {exc.strerror or exc}") from exc
    return True
