"""Interfaces the upgrade core drives; implementations live in drivers/upgrade/."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

SLOTS = ("a", "b")


def other_slot(slot: str) -> str:
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


@dataclasses.dataclass(frozen=True)
class BootStatus:
    booted_slot: str  # the slot this boot is running from
    boot_id: str  # changes on every boot
    next_slot: str  # what the bootloader will start next time
    trial: bool  # next_slot is on trial (upgrade_available=1); the bootloader counts boots
    bootcount: int = 0


class SlotWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def sync(self) -> None:
        """Flush and fsync everything written so far."""
        ...

    def close(self) -> None: ...


class SlotDriver(Protocol):
    """A/B image slots plus the bootloader's environment."""

    def boot_status(self) -> BootStatus: ...

    def open_writer(self, slot: str, offset: int) -> SlotWriter:
        """Write ``slot`` from ``offset`` on (earlier bytes are kept, later ones dropped)."""
        ...

    def read(self, slot: str, size: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The first ``size`` bytes of ``slot``, as stored."""
        ...

    def mark_trial(self, slot: str) -> None:
        """Boot ``slot`` next, on trial: the bootloader falls back after the boot limit."""
        ...

    def commit(self, slot: str) -> None:
        """Make the running ``slot`` permanent (clear the trial and the boot counter)."""
        ...

    def rollback(self, slot: str) -> None:
        """Boot ``slot`` (the previous image) next, permanently."""
        ...


class ImageStream(Protocol):
    """An HTTP(S) body being read; ``start`` is the offset of its first byte."""

    start: int
    length: int | None  # bytes this response claims to carry from ``start`` on

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end.  Raises TransportError on stalls/cuts."""
        ...

    def close(self) -> None: ...


class ImageSource(Protocol):
    # False for a source that reads a local file whatever the URI says (offline install).
    fetches_uri: bool

    def open(self, uri: str, offset: int) -> ImageStream:
        """Ask for ``uri`` from ``offset`` on (a Range request when offset > 0)."""
        ...


class StateStore(Protocol):
    def load(self) -> bytes | None: ...

    def save(self, data: bytes) -> None:
        """Persist atomically: after a crash either the old or the new bytes are there."""
        ...

    def set_aside(self, now: float) -> str | None:
        """Move an unreadable state out of the way (kept); where it went, None if it is gone."""
        ...

    def load_envelope(self, slot: str) -> bytes | None:
        """The envelope saved for ``slot``, if any (not trusted: verify it)."""
        ...

    def save_envelope(self, slot: str, envelope: bytes | None) -> None:
        """Remember the envelope of the image verified into ``slot`` (None: forget it)."""
        ...

    def clean_stale(self) -> list[str]:
        """Remove what killed writes left behind; the paths removed."""
        ...
