"""Configuration of logging, retention and audit (sections ``[logs]``, ``[retention]``)."""

from __future__ import annotations

import dataclasses
import enum
import pathlib


class LogLevel(enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclasses.dataclass(frozen=True)
class LogSettings:
    """The agent's own log, the technician's bundle and how it is fetched.

    Attributes:
        max_store_bytes: Total JSON-lines log kept on disk, live file and backups.
        backup_files (files): Rotated log files kept besides the live one.
        level: Lowest level written to the log.
        max_bundle_bytes: A log bundle larger than this is cut (oldest lines first) and
            says so in its header.
        serial_chunk_bytes: Bundle bytes sent per frame on the serial console.
        serial_port: Serial console device the technician pulls logs over (e.g.
            ``/dev/ttyS0``); empty disables it.
        serial_baud: Speed of ``serial_port``.
        technician_token_file: File holding the technician token (an alternative to
            the verification code); unset: the code only.
        max_failed_auth (attempts): Failed technician authentications (serial or LAN)
            before a lockout.
        auth_lockout_seconds: Length of that lockout.
        lan_port (-): TCP port of the LAN bundle endpoint (technician token only); 0 = off.
        lan_bind_address: Address the LAN bundle endpoint listens on.
        lan_max_connections (connections): Open LAN connections at once; more are
            answered 503 and closed.
        lan_max_connections_per_source (connections): Open LAN connections at once from
            one source address.
        lan_timeout_seconds: Time a whole LAN request (line, headers, query) may take to
            arrive.
        serial_write_timeout_seconds: A console peer that takes no byte of output for
            this long is dropped.
        event_lines: Log one line per event: recorded, or held back and why (``make run``
            turns it on; on a device it would fill the log store with one line per
            motion frame).
    """

    # Total bytes of JSON-lines log on disk, over the live file and its backups.
    max_store_bytes: int = dataclasses.field(
        default=8 * 1024 * 1024, metadata={"min": 64 * 1024, "max": 1 << 30}
    )
    backup_files: int = dataclasses.field(default=3, metadata={"min": 1, "max": 20})
    level: LogLevel = LogLevel.INFO
    # A bundle larger than this is cut (oldest lines first) and says so in its header.
    max_bundle_bytes: int = dataclasses.field(
        default=2 * 1024 * 1024, metadata={"min": 4 * 1024, "max": 64 * 1024 * 1024}
    )
    serial_chunk_bytes: int = dataclasses.field(
        default=4096, metadata={"min": 256, "max": 60 * 1024}
    )
    # Console port the technician pulls logs over; empty disables the serial service.
    serial_port: str = ""
    serial_baud: int = dataclasses.field(default=115200, metadata={"min": 1200, "max": 4_000_000})
    # A file holding the technician token (an alternative to the verification code).
    technician_token_file: pathlib.Path | None = None
    # Failed technician authentications (serial or LAN) before a lockout.
    max_failed_auth: int = dataclasses.field(default=5, metadata={"min": 1, "max": 100})
    auth_lockout_seconds: float = dataclasses.field(
        default=300.0, metadata={"min": 1.0, "max": 86400.0}
    )
    # LAN bundle endpoint (technician token only: a bearer secret crosses the network, so
    # the verification code is never accepted there). 0 = off.
    lan_port: int = dataclasses.field(default=0, metadata={"min": 0, "max": 65535})
    lan_bind_address: str = "127.0.0.1"
    # Hostile LAN peers (drivers/httpserve.py): open connections at once, in all and per
    # source address (more are answered 503 and closed), and the time a whole request
    # (line, headers, query) may take to arrive; the cap is also held under 1/8 of the
    # process's file descriptor limit.
    lan_max_connections: int = dataclasses.field(default=16, metadata={"min": 1, "max": 256})
    lan_max_connections_per_source: int = dataclasses.field(
        default=4, metadata={"min": 1, "max": 256}
    )
    lan_timeout_seconds: float = dataclasses.field(
        default=10.0, metadata={"min": 0.5, "max": 300.0}
    )
    # A console peer that takes no byte of our output for this long is dropped (its
    # session and queued output discarded), so a stalled reader never holds the loop.
    serial_write_timeout_seconds: float = dataclasses.field(
        default=5.0, metadata={"min": 0.5, "max": 300.0}
    )
    event_lines: bool = False


@dataclasses.dataclass(frozen=True)
class RetentionSettings:
    """How long personal data is kept; 0 keeps nothing past the next purge.

    Attributes:
        events_days: Age at which stored events are purged.
        snapshots_days: Age at which stored snapshots are purged.
        logs_days: Age at which log lines are purged.
        match_history_days: Age at which face/plate match history is purged.
        purge_interval_seconds: How often the purge runs.
    """

    events_days: int = dataclasses.field(default=30, metadata={"min": 0, "max": 3650})
    snapshots_days: int = dataclasses.field(default=7, metadata={"min": 0, "max": 3650})
    logs_days: int = dataclasses.field(default=14, metadata={"min": 0, "max": 3650})
    match_history_days: int = dataclasses.field(default=30, metadata={"min": 0, "max": 3650})
    purge_interval_seconds: int = dataclasses.field(
        default=3600, metadata={"min": 10, "max": 86400}
    )
