"""Data keys per domain, wrapped by the device key: the means of crypto-erase.

Each domain (a consent purpose, or ``wifi``) has numbered data keys; data is
sealed under the newest (:mod:`agent.sealing`).  A key lives in its own small
file, written once and never replaced, holding the key wrapped (AES-256-GCM)
by the device key.  The device key sits behind :class:`DeviceKey`, the
key-store protocol: a 0600 file today (:class:`FileDeviceKey`), a TPM or a
secure element later, without any store noticing.

Destroying a domain's keys (withdrawal, erasure) overwrites each key file in
place, fsyncs it, unlinks it and fsyncs the directory.  Every copy of the data
(WAL frames, rollback journals, freed blocks, old files replaced by rename)
stays ciphertext with no key.  The highest destroyed number is recorded
*before* the overwrite, so a crash half-way is finished at the next start and
numbers are never reused.

Crash safety of the steps around it (README "Crypto-erase"):
- a key is on disk (fsync'd) before anything is sealed under it, so no data
  is ever sealed under a key that a crash could lose;
- withdrawal and erasure write an *intent* first, destroy the keys, then purge;
  an intent still present at start is carried out again (idempotent), so a
  kill never leaves data readable with nothing left to destroy it;
- rotation makes the new key, reseals every store, and only then destroys the
  older keys; two live keys at start mean a rotation to finish, never a key to
  drop with data still under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from agent.atomicfile import read_optional, write_atomic
from agent.errors import DeviceIOError
from agent.layout import StateLayout
from agent.randompool import random_bytes
from agent.sealing import (
    KEY_BYTES,
    NONCE_BYTES,
    DataKey,
    KeyDestroyed,
    SealedDataError,
    header_bytes,
    read_header,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

WRAPPED_MAGIC = b"EAK1"
MAX_KEY_FILE_BYTES = 256
MAX_INTENT_BYTES = 64 * 1024
# How long a key file once seen is taken to be still there (see DataKeys._still_there).
KEY_RECHECK_SECONDS = 0.5


class DeviceKey(Protocol):
    """The key-store protocol: the one key that never leaves its store wraps the data keys."""

    def wrap(self, secret: bytes, label: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, label: bytes) -> bytes: ...


class FileDeviceKey:
    """The device key in a 0600 file, made once (exclusively: never silently replaced)."""

    def __init__(self, path: pathlib.Path) -> None:
        self._path = path
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def _key(self) -> AESGCM:
        # Imported here: light CLI paths (--help) never load the crypto stack.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        with self._lock:
            if self._secret is None:
                self._secret = self._load_or_create()
            return AESGCM(self._secret)

    def _load_or_create(self) -> bytes:
        existing = read_optional(self._path, KEY_BYTES)
        if existing is None:
            # Another process may make it first: then use theirs.
            with contextlib.suppress(FileExistsError):
                write_atomic(self._path, secrets.token_bytes(KEY_BYTES), exclusive=True)
            existing = read_optional(self._path, KEY_BYTES)
        if existing is None or len(existing) != KEY_BYTES:
            # Never replace it: every data key is wrapped under it.
            raise DeviceIOError(
                f"device key {self._path} is damaged; the data sealed under it cannot be read"
            )
        return existing

    def wrap(self, secret: bytes, label: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return WRAPPED_MAGIC + nonce + self._key().encrypt(nonce, secret, label)

    def unwrap(self, wrapped: bytes, label: bytes) -> bytes:
        if wrapped[:4] != WRAPPED_MAGIC or len(wrapped) < 4 + NONCE_BYTES + 16:
            raise SealedDataError("not a wrapped data key")
        from cryptography.exceptions import InvalidTag

        nonce = wrapped[4 : 4 + NONCE_BYTES]
        try:
            return self._key().decrypt(nonce, wrapped[4 + NONCE_BYTES :], label)
        except InvalidTag:
            raise SealedDataError("wrapped data key fails authentication") from None


def _label(domain: str, number: int) -> bytes:
    return f"edge-agent data key {domain} {number}".encode()


def overwrite_and_unlink(path: pathlib.Path) -> bool:
    """Overwrite ``path`` in place with random bytes, fsync, unlink, fsync the directory."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise DeviceIOError(f"cannot destroy {path}: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(fd).st_size
        view = memoryview(secrets.token_bytes(max(size, 1)))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        path.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DeviceIOError(f"cannot destroy {path}: {exc.strerror or exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)
    return True


class _KeyUse:
    """A live key with what using it needs, made once (the event path seals per message)."""

    def __init__(self, key: DataKey, path: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.key = key
        self.path = path
        # When the key file was last seen on disk (monotonic); see KEY_RECHECK_SECONDS.
        self.seen_at = -1e18
        self.header = header_bytes(key.domain, key.number)
        self._aead = AESGCM(key.secret)
        self._tagger: crypto_hmac.HMAC | None = None

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = random_bytes(NONCE_BYTES)
        header = self.header
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + context)

    def open(self, blob: bytes, header_length: int, context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        nonce = blob[header_length : header_length + NONCE_BYTES]
        try:
            return self._aead.decrypt(
                nonce, blob[header_length + NONCE_BYTES :], blob[:header_length] + context
            )
        except InvalidTag:
            raise SealedDataError(
                f"sealed blob under {self.key.domain}#{self.key.number} fails authentication"
            ) from None

    def tag(self, text: str) -> str:
        # HMAC-SHA256 under a key derived from the data key, as before.  The keyed
        # state is made once and copied per tag: building HMAC objects (or a one-shot
        # digest, which OpenSSL 3 sets up afresh) per queued event cost a tenth of the
        # event path (issue 12).
        if self._tagger is None:
            derive = crypto_hmac.HMAC(self.key.secret, hashes.SHA256())
            derive.update(b"edge-agent row tag")
            self._tagger = crypto_hmac.HMAC(derive.finalize(), hashes.SHA256())
        mac = self._tagger.copy()
        mac.update(text.encode())
        return f"t{self.key.number}:" + mac.finalize()[:16].hex()


class DataKeys:
    """Numbered data keys per domain in ``layout.keys_dir``; safe to share between threads.

    Another process (the CLI) may destroy or add keys at any time: the cache is
    checked against the key file before each use, so a destroyed key is never
    used again by a process that had it in memory.
    """

    def __init__(
        self,
        layout: StateLayout,
        device: DeviceKey | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._layout = layout
        self._monotonic = monotonic
        self._device = device if device is not None else FileDeviceKey(layout.device_key)
        self._lock = threading.RLock()
        self._keys: dict[tuple[str, int], _KeyUse] = {}
        self._current: dict[str, _KeyUse] = {}

    @property
    def device(self) -> DeviceKey:
        """The key-store protocol behind these keys; it wraps other long-term secrets too."""
        return self._device

    # --- reading the directory --------------------------------------------------

    def live_numbers(self, domain: str) -> list[int]:
        numbers = []
        for path in self._layout.data_key_files(domain):
            number = path.name[len(domain) + 1 : -len(".key")]
            if number.isdigit():
                numbers.append(int(number))
        return sorted(numbers)

    def destroyed_through(self, domain: str) -> int:
        raw = read_optional(self._layout.destroyed_keys(domain), 32)
        try:
            return int(raw) if raw else 0
        except ValueError:
            return 0

    # --- using keys -------------------------------------------------------------

    def current(self, domain: str) -> DataKey:
        """The newest live key of ``domain``, made (and fsync'd) if there is none."""
        return self._current_use(domain).key

    def _current_use(self, domain: str) -> _KeyUse:
        with self._lock:
            cached = self._current.get(domain)
            if cached is not None and self._still_there(cached):
                return cached
            live = self.live_numbers(domain)
            if live:
                use = self._use(domain, live[-1])
            else:
                use = self._create(domain, self.destroyed_through(domain) + 1)
            self._current[domain] = use
            return use

    def key(self, domain: str, number: int) -> DataKey:
        """Key ``number`` of ``domain``; :class:`KeyDestroyed` if it is gone."""
        return self._use(domain, number).key

    def _use(self, domain: str, number: int) -> _KeyUse:
        with self._lock:
            cached = self._keys.get((domain, number))
            if cached is not None and self._still_there(cached):
                return cached
            self._keys.pop((domain, number), None)
            path = self._layout.data_key(domain, number)
            wrapped = read_optional(path, MAX_KEY_FILE_BYTES)
            if wrapped is None:
                raise KeyDestroyed(domain, number)
            secret = self._device.unwrap(wrapped, _label(domain, number))
            use = _KeyUse(DataKey(domain, number, secret), str(path))
            self._keys[(domain, number)] = use
            return use

    def _still_there(self, use: _KeyUse) -> bool:
        """Whether the key file exists, looked at no more than every KEY_RECHECK_SECONDS.

        A stat per sealed message was a tenth of the event path's cost.  This
        process drops a key it destroys at once; a key another process (the CLI)
        destroys may be used here for up to that long, which is harmless: what is
        sealed under it meanwhile is unreadable, and the withdrawal or erasure that
        destroyed it purges its rows in the same step.
        """
        now = self._monotonic()
        if now - use.seen_at < KEY_RECHECK_SECONDS:
            return True
        if os.path.exists(use.path):
            use.seen_at = now
            return True
        return False

    def seal(self, domain: str, plaintext: bytes, context: bytes = b"") -> bytes:
        return self._current_use(domain).seal(plaintext, context)

    def seal_tagged(
        self, domain: str, plaintext: bytes, context: bytes, text: str
    ) -> tuple[bytes, str]:
        """:meth:`seal` and :meth:`tag` under one and the same current key (one lookup)."""
        use = self._current_use(domain)
        return use.seal(plaintext, context), use.tag(text)

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        """The plaintext of a sealed blob; :class:`KeyDestroyed` if its key was destroyed."""
        header = read_header(blob)
        return self._use(header.domain, header.number).open(blob, header.length, context)

    def tag(self, domain: str, text: str) -> str:
        """A keyed tag of ``text`` under the domain's current key (unlinkable once it is gone).

        For columns a store must look up or keep unique (an event's id) without
        keeping the value itself in clear beside the ciphertext.
        """
        return self._current_use(domain).tag(text)

    def is_current(self, blob: bytes) -> bool:
        header = read_header(blob)
        live = self.live_numbers(header.domain)
        return bool(live) and header.number == live[-1]

    def _create(self, domain: str, number: int) -> _KeyUse:
        secret = secrets.token_bytes(KEY_BYTES)
        wrapped = self._device.wrap(secret, _label(domain, number))
        path = self._layout.data_key(domain, number)
        try:
            write_atomic(path, wrapped, exclusive=True)
        except FileExistsError:
            return self._use(domain, number)  # another process made it: use theirs
        use = _KeyUse(DataKey(domain, number, secret), str(path))
        self._keys[(domain, number)] = use
        return use

    # --- rotation and destruction -------------------------------------------------

    def rotate(self, domain: str) -> DataKey:
        """A new current key; older ones stay until :meth:`retire_older` (after the reseal)."""
        with self._lock:
            live = self.live_numbers(domain)
            top = max([self.destroyed_through(domain), *live], default=0)
            use = self._create(domain, top + 1)
            self._current[domain] = use
            return use.key

    def retire_older(self, domain: str) -> int:
        """Destroy every key of ``domain`` but the newest: the end of a rotation."""
        with self._lock:
            live = self.live_numbers(domain)
            return self._destroy(domain, live[:-1]) if len(live) > 1 else 0

    def destroy(self, domain: str) -> int:
        """Destroy every key of ``domain``: all data sealed under them is gone for good."""
        with self._lock:
            return self._destroy(domain, self.live_numbers(domain))

    def _destroy(self, domain: str, numbers: list[int]) -> int:
        if not numbers:
            return 0
        # Recorded first: a crash half-way leaves a live key at or below this mark,
        # which the next start destroys (finish_destruction), and numbers only grow.
        self._current.pop(domain, None)
        mark = max(numbers[-1], self.destroyed_through(domain))
        write_atomic(self._layout.destroyed_keys(domain), str(mark).encode(), 0o600)
        destroyed = 0
        for number in numbers:
            self._keys.pop((domain, number), None)
            destroyed += overwrite_and_unlink(self._layout.data_key(domain, number))
        return destroyed

    def finish_destruction(self, domains: Iterable[str]) -> int:
        """At start: destroy keys a crash left at or below their domain's destroyed mark."""
        finished: dict[str, int] = {}
        with self._lock:
            for domain in domains:
                mark = self.destroyed_through(domain)
                stale = [n for n in self.live_numbers(domain) if n <= mark]
                if stale:
                    finished[domain] = self._destroy(domain, stale)
        # Logged outside the lock: the sealed log handler takes it too (lock order).
        for domain, count in finished.items():
            log.warning("finished the destruction of %d %s key(s)", count, domain)
        return sum(finished.values())

    # --- rotation requests: one item removed -------------------------------------------

    def request_rotation(self, domain: str) -> None:
        """One item of ``domain`` was removed (a person, a plate): rotate its key soon.

        The removal rewrote or deleted the item, but copies of the old files or
        rows may sit in freed blocks under the live key; once the daemon rotates
        (reseal everything, destroy the old key) they are unreadable.  Recorded in
        a file, so a removal made by the CLI, or one a kill interrupted, is done
        by the next daemon pass or start.
        """
        with self._lock:
            pending = self.rotation_requests()
            if domain not in pending:
                write_atomic(
                    self._layout.key_rotation_requests,
                    json.dumps([*pending, domain]).encode(),
                    0o600,
                )

    def rotation_requests(self) -> list[str]:
        raw = read_optional(self._layout.key_rotation_requests, MAX_INTENT_BYTES)
        try:
            value = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [str(v) for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def clear_rotation_requests(self, done: list[str]) -> None:
        with self._lock:
            rest = [d for d in self.rotation_requests() if d not in done]
            write_atomic(self._layout.key_rotation_requests, json.dumps(rest).encode(), 0o600)

    # --- intents: withdrawal and erasure that survive a kill -----------------------

    def intents(self) -> list[dict[str, object]]:
        raw = read_optional(self._layout.key_intents, MAX_INTENT_BYTES)
        if not raw:
            return []
        try:
            value = json.loads(raw)
        except ValueError:
            # Not logged here (begin/settle hold the lock the sealed log handler takes);
            # an unreadable file holds no intent anyone could carry out.
            return []
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    def begin(self, intent: dict[str, object]) -> None:
        """Record ``intent`` (fsync'd) before its first step; :meth:`settle` after its last."""
        with self._lock:
            pending = [i for i in self.intents() if i != intent] + [intent]
            write_atomic(self._layout.key_intents, json.dumps(pending).encode(), 0o600)

    def settle(self, intent: dict[str, object]) -> None:
        with self._lock:
            pending = self.intents()
            if intent in pending:
                rest = [i for i in pending if i != intent]
                write_atomic(self._layout.key_intents, json.dumps(rest).encode(), 0o600)
