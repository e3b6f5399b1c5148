"""Make sure the state directory is usable before anything opens a store in it.

Checked once, up front, by the composition root: an unusable directory (a file
in its place, a read-only file system, another user's directory) stops the
agent with one line naming the path and the fix (:class:`StateDirError`, exit
code ``EXIT_STATE_DIR``) instead of a traceback from whichever store touched it
first, and systemd does not restart a process that cannot succeed.
"""

from __future__ import annotations

import errno
import os
import pathlib
import tempfile

from agent.errors import StateDirError

MODE = 0o700
SETTING = "state_dir (--state-dir)"


def _owner(path: pathlib.Path) -> int | None:
    # The directory itself, else the nearest parent that exists (mkdir failed).
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_uid
        except OSError:
            continue
    return None


def _fail(path: pathlib.Path, exc: OSError, doing: str) -> StateDirError:
    """One error for ``exc``, with the fix that fits its cause."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        return StateDirError(
            path,
            f"cannot {doing}: the file system is read-only",
            f"mount it read-write, or set {SETTING} to a writable directory",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        me, owner = os.geteuid(), _owner(path)
        if owner is not None and owner != me:
            return StateDirError(
                path,
                f"cannot {doing}: {reason} (owned by uid {owner}, the agent runs as uid {me})",
                f"chown -R {me}:{os.getegid()} {path} (systemd's StateDirectory= does this), "
                f"or set {SETTING} to a directory this user owns",
            )
        return StateDirError(
            path,
            f"cannot {doing}: {reason} (uid {me})",
            f"give uid {me} write access (chmod u+rwx; lsattr -d shows an immutable flag), "
            f"or set {SETTING} to a writable directory",
        )
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return StateDirError(
            path,
            f"cannot {doing}: a file stands where a directory should be",
            f"move that file away, or set {SETTING} to a directory",
        )
    if exc.errno == errno.ENOSPC:
        return StateDirError(path, f"cannot {doing}: the disk is full", "free some space")
    return StateDirError(path, f"cannot {doing}: {reason}", f"check the path, or set {SETTING}")


def ensure_state_dir(path: pathlib.Path) -> None:
    """Create ``path`` (mode 0700) if missing and prove a file can be written in it.

    Root passes permission bits, so only a real write shows what the agent can do:
    a read-only mount, an immutable directory or a dropped capability.
    """
    if path.exists() and not path.is_dir():
        raise StateDirError(
            path,
            "is a file, not a directory",
            f"move the file away, or set {SETTING} to a directory",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(path, exc, "create it") from exc
    try:
        # The state holds keys and personal data: nobody else may even list it.
        os.chmod(path, MODE)
    except OSError as exc:
        raise _fail(path, exc, "make it private (chmod 0700)") from exc
    try:
        # Unnamed (O_TMPFILE where supported), so nothing is left behind.
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as exc:
        raise _fail(path, exc, "write in it") from exc
