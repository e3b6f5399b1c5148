"""The state directory's footprint and health, watched once per loop pass.

:class:`StorageGuard` keeps the promise "an ok means committed, a full or
broken disk loses nothing silently" on the storage side:

* **Bounded.**  The write-ahead log is checkpointed once it passes
  ``storage.wal_max_bytes``; the whole directory is measured every
  ``check_interval_seconds`` (the database files every pass) against
  ``max_state_bytes``, and the file system's free space against
  ``min_free_bytes``.
* **Pressure.**  Near the cap the oldest low-value events
  (``outbox.LOW_VALUE_PURPOSES``: statistics and motion) are dropped first,
  in slices, and counted (``dropped_full``): a ring buffer that keeps the
  newest.  Dropped rows leave free pages the next rows fill, so the file
  stops growing.
* **Full.**  When that cannot make room (nothing low-value left, or the file
  system itself is full) the guard releases the reserve file (room for the
  agent's own state: status events, acknowledgements), removes damaged copies
  kept for forensics and says ``full``: the sink then refuses every new event
  but the device's own status -- a command that would queue one hears
  ``unavailable`` -- and counts the refusals.  Each pass looks again; once
  room is back (with hysteresis) events are accepted within that same pass and
  the reserve is made again.
* **Damaged.**  After any error that may mean damage, the database runs its
  integrity check and is salvaged in place (:meth:`agent.database.Database.check`).
* **Lost.**  At start, and after a salvage, the outbox compares its sequence
  with the high-water file; a gap is counted as ``lost`` and reported.

Every finding is one log line with a stable code and a ``device.status``
event, and shows in the ``status`` reply under ``storage``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
from typing import TYPE_CHECKING

from agent.database import SalvageReport, StorageIOError, is_disk_full
from agent.errors import DeviceIOError
from agent.events import Event
from agent.layout import StateLayout
from agent.storage_settings import StorageSettings

if TYPE_CHECKING:
    from agent.outbox import Gap, Outbox

log = logging.getLogger(__name__)

# The whole tree is walked at most this often while full (the databases every pass).
FULL_WALK_SECONDS = 1.0
# An integrity check reads the whole file: not more often than this.
CHECK_EVERY_SECONDS = 10.0
# The ring-buffer regime (oldest low-value events dropped) logs at most this often.
DROP_NOTE_SECONDS = 60.0
# Damaged copies kept for forensics (the newest); older ones are removed at start.
KEEP_DAMAGED = 1


def status_event(now: float, state: str, detail: dict[str, object]) -> Event:
    return Event("device.status", occurred_at=now, fields={"state": state, "detail": detail})


def allocated_bytes(path: pathlib.Path) -> int:
    """Disk space the file really takes (blocks, not its apparent size); 0 if absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    return int(st.st_blocks) * 512


def tree_bytes(root: pathlib.Path, skip: frozenset[pathlib.Path]) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = pathlib.Path(folder, name)
            if path not in skip:
                total += allocated_bytes(path)
    return total


@dataclasses.dataclass(frozen=True)
class Usage:
    # Allocated bytes of everything under the state directory, the WAL counted at no
    # less than its bound (its swings between checkpoints must not cross the cap).
    footprint: int
    reclaimable: int  # free pages inside the database: new rows fill them before it grows
    wal: int
    reserve: int
    fs_free: int

    @property
    def used(self) -> int:
        """What the state holds for good; ``max_state_bytes - used`` is what still fits."""
        return self.footprint - self.reclaimable

    def describe(self) -> dict[str, object]:
        return {
            "used_bytes": self.used,
            "footprint_bytes": self.footprint,
            "wal_bytes": self.wal,
            "reserve_bytes": self.reserve,
            "fs_free_bytes": self.fs_free,
        }


class StorageGuard:
    def __init__(self, layout: StateLayout, settings: StorageSettings, outbox: Outbox) -> None:
        self.layout = layout
        self.settings = settings
        self.outbox = outbox
        self.db = outbox.db
        self.full = False
        self.reason = ""
        # Events refused while full (never accepted, so never lost) and failed commits.
        self.refused = 0
        self.write_failures = 0
        self.checkpoints = 0
        self.usage: Usage | None = None
        self._started = False
        self._other_bytes = 0
        self._next_walk = 0.0
        self._next_check = 0.0
        self._reported_salvages = 0
        self._reserve_failed = False
        self._dropped_unreported = 0
        self._next_drop_note = 0.0
        self._db_files = frozenset(
            (layout.database, layout.database_wal, layout.database_shm)
        )

    # --- the per-pass work ------------------------------------------------------------

    def maintain(self, now: float) -> list[Event]:
        """One pass: report, check, measure, bound the WAL, enter or leave ``full``.

        Returns the ``device.status`` events to queue.  Raises only storage
        errors (:class:`StorageIOError`), which the caller reports in one line.
        """
        events: list[Event] = []
        if not self._started:
            self._started = True
            events += self._start(now)
        if self.db.suspect is not None and now >= self._next_check:
            self._next_check = now + CHECK_EVERY_SECONDS
            if self.db.check() is not None:
                events += self._report_salvages(now)
        usage = self.measure(now)
        if usage.wal > self.settings.wal_max_bytes:
            self._bound_wal()
        if not self.full:
            if self._pressure(usage) is not None:
                # First the documented policy: the oldest low-value events make way.
                self._note_drops(now, self._make_room(usage))
                usage = self.measure(now)
                reason = self._pressure(usage)
                if reason is not None:
                    events += self._enter_full(now, reason, usage)
        else:
            self._note_drops(now, self._make_room(usage))
            usage = self.measure(now)
            if self._room_back(usage):
                events += self._leave_full(now, usage)
        if not self.full:
            self._ensure_reserve(usage)
        return events

    def on_write_error(self, exc: BaseException, now: float) -> list[Event]:
        """A commit failed: a full disk is acted on at once (not at the next measurement)."""
        self.write_failures += 1
        self.db.note_error(exc)
        if self.full or not is_disk_full(exc):
            return []
        return self._enter_full(now, "a commit failed: the disk is full", self.measure(now))

    # --- measuring ----------------------------------------------------------------------

    def measure(self, now: float) -> Usage:
        root = self.layout.root
        if now >= self._next_walk:
            self._other_bytes = tree_bytes(root, self._db_files)
            interval = self.settings.check_interval_seconds
            self._next_walk = now + (min(interval, FULL_WALK_SECONDS) if self.full else interval)
        wal = allocated_bytes(self.layout.database_wal)
        db_bytes = sum(allocated_bytes(p) for p in self._db_files) - wal
        db_bytes += max(wal, self.settings.wal_max_bytes)
        try:
            stat = os.statvfs(root)
            fs_free = int(stat.f_bavail) * int(stat.f_frsize)
        except OSError as exc:
            raise StorageIOError(f"cannot measure {root}: {exc.strerror or exc}") from exc
        self.usage = Usage(
            footprint=self._other_bytes + db_bytes,
            reclaimable=self.db.free_page_bytes(),
            wal=wal,
            reserve=allocated_bytes(self.layout.storage_reserve),
            fs_free=fs_free,
        )
        return self.usage

    def _pressure(self, usage: Usage) -> str | None:
        s = self.settings
        if usage.used + s.margin_bytes > s.max_state_bytes:
            return f"the state directory holds {usage.used} bytes, cap {s.max_state_bytes}"
        if usage.fs_free < s.min_free_bytes:
            return f"{usage.fs_free} bytes free on its file system, below {s.min_free_bytes}"
        return None

    def _reserve_owed(self, usage: Usage) -> int:
        """Bytes the reserve still needs, if it fits under the cap (the file never shrinks)."""
        owed = max(0, self.settings.reserve_bytes - usage.reserve)
        return owed if usage.footprint + owed <= self.settings.max_state_bytes else 0

    def _room_back(self, usage: Usage) -> bool:
        s = self.settings
        # Twice the margin under both limits, with the reserve made again: hysteresis, so
        # one event does not flip the state back.
        owed = self._reserve_owed(usage)
        margin = s.margin_bytes
        return (
            usage.used + owed + 2 * margin <= s.max_state_bytes
            and usage.fs_free - owed >= s.min_free_bytes + margin
        )

    # --- full and back --------------------------------------------------------------------

    def _enter_full(self, now: float, reason: str, usage: Usage) -> list[Event]:
        self.full = True
        self.reason = reason
        released = self._release_reserve()
        released += self._remove_damaged(keep=0)
        dropped = self._make_room(self.measure(now))
        log.error(
            "EA-DB-002 storage full: %s; new events are refused (commands that would queue "
            "one answer 'unavailable') until room comes back; reserve released (%d bytes), "
            "%d low-value events dropped",
            reason,
            released,
            dropped,
        )
        return [
            status_event(
                now,
                "storage_full",
                {"reason": reason, "dropped": dropped, **usage.describe()},
            )
        ]

    def _make_room(self, usage: Usage) -> int:
        """Drop the oldest low-value events: down under the cap, and some free pages to use."""
        s = self.settings
        # The same sum as _room_back, and enough free pages for the device's own state.
        over = usage.used + self._reserve_owed(usage) + 2 * s.margin_bytes - s.max_state_bytes
        want = max(over, s.margin_bytes - usage.reclaimable, 0)
        # In slices: one large delete would write its every page to the WAL at once.
        step = max(s.wal_max_bytes // 4, 16 * 1024)
        dropped = 0
        try:
            while want > 0:
                count = self.outbox.drop_low_value(min(want, step))
                if count == 0:
                    break
                dropped += count
                want -= step
        except DeviceIOError as exc:
            log.warning("EA-DB-004 could not drop low-value events to make room: %s", exc)
        return dropped

    def _leave_full(self, now: float, usage: Usage) -> list[Event]:
        self.full = False
        self.reason = ""
        log.warning(
            "storage: room again (%d bytes used, %d free on the file system); "
            "events are accepted again (%d were refused while full)",
            usage.used,
            usage.fs_free,
            self.refused,
        )
        return [status_event(now, "storage_ok", {"refused": self.refused, **usage.describe()})]

    def _note_drops(self, now: float, dropped: int) -> None:
        """The ring-buffer regime: one line a minute at most, with the count since the last."""
        self._dropped_unreported += dropped
        if self._dropped_unreported and now >= self._next_drop_note:
            log.warning(
                "storage: dropped the %d oldest low-value events (statistics, motion) to stay "
                "under storage.max_state_bytes = %d; counted in outbox.dropped_full",
                self._dropped_unreported,
                self.settings.max_state_bytes,
            )
            self._dropped_unreported = 0
            self._next_drop_note = now + DROP_NOTE_SECONDS

    def _bound_wal(self) -> None:
        # RESTART while full: TRUNCATE would give back blocks the next commit needs again.
        self.db.checkpoint("RESTART" if self.full else "TRUNCATE")
        self.checkpoints += 1

    # --- the reserve ----------------------------------------------------------------------

    def _ensure_reserve(self, usage: Usage) -> None:
        size = self.settings.reserve_bytes
        path = self.layout.storage_reserve
        if size <= 0 or usage.reserve >= size or not self._reserve_owed(usage):
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                # Really allocated (not a sparse file), so releasing it really frees space.
                os.posix_fallocate(fd, 0, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if not self._reserve_failed:
                log.warning("storage: cannot make the reserve %s: %s", path, exc.strerror or exc)
            self._reserve_failed = True
            return
        self._reserve_failed = False

    def _release_reserve(self) -> int:
        path = self.layout.storage_reserve
        size = allocated_bytes(path)
        path.unlink(missing_ok=True)
        return size

    def _remove_damaged(self, keep: int) -> int:
        """Remove damaged copies kept for forensics (all under pressure, else the oldest)."""
        copies = self.layout.damaged_copies()
        doomed = copies[: max(0, len(copies) - keep)]
        freed = 0
        for folder in doomed:
            freed += tree_bytes(folder, frozenset())
            shutil.rmtree(folder, ignore_errors=True)
        if doomed:
            log.warning("storage: removed %d damaged database copies kept aside", len(doomed))
        return freed

    # --- start, salvage and loss reports ----------------------------------------------------

    def _start(self, now: float) -> list[Event]:
        events = self._report_salvages(now)
        self.db.remember_schema()
        self._remove_damaged(keep=KEEP_DAMAGED)
        return events

    def _report_salvages(self, now: float) -> list[Event]:
        events: list[Event] = []
        for report in self.db.salvaged[self._reported_salvages :]:
            self._reported_salvages += 1
            events.append(self._report_salvage(now, report))
        gap = self.outbox.find_gap()
        if gap is not None:
            events.append(self._report_gap(now, gap))
        return events

    def _report_salvage(self, now: float, report: SalvageReport) -> Event:
        rows = ", ".join(f"{table} {count}" for table, count in sorted(report.recovered.items()))
        log.error(
            "EA-DB-001 database %s was damaged (%s); moved aside to %s and salvaged with "
            "sqlite3 %s: recovered rows: %s%s; the agent goes on with the salvaged database",
            self.layout.database,
            report.problem,
            report.moved_to.name if report.moved_to else "nowhere",
            report.tool,
            rows or "none",
            f" ({report.note})" if report.note else "",
        )
        return status_event(
            now,
            "degraded",
            {
                "reason": "database_damaged",
                "problem": report.problem,
                "tool": report.tool,
                "recovered": dict(report.recovered),
            },
        )

    def _report_gap(self, now: float, gap: Gap) -> Event:
        try:
            self.outbox.count_lost(gap)
        except DeviceIOError as exc:
            log.warning("EA-DB-004 could not count the lost events: %s", exc)
        log.error(
            "EA-DB-003 %d committed events were lost from the database (seq %d..%d): the "
            "high-water file had recorded them; some may have been delivered before",
            gap.count,
            gap.first,
            gap.last,
        )
        return status_event(
            now,
            "degraded",
            {
                "reason": "events_lost",
                "lost": gap.count,
                "first_seq": gap.first,
                "last_seq": gap.last,
            },
        )

    # --- status -------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        usage = self.usage.describe() if self.usage is not None else {}
        return {
            "state": "full" if self.full else "ok",
            "reason": self.reason,
            "cap_bytes": self.settings.max_state_bytes,
            **usage,
            "refused": self.refused,
            "write_failures": self.write_failures,
            "salvaged": len(self.db.salvaged),
        }
