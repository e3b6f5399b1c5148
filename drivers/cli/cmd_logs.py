"""``edge-agent logs bundle|pull|codes``: redacted log bundles for field technicians.

``bundle`` runs on the device and reads the local store; ``pull`` runs on the
technician's laptop and fetches a bundle over the device's serial console.

A bundle is JSON Lines (a header, then the redacted records).  With ``--json``,
``bundle`` and ``pull`` print one document instead: the bundle's facts and, without
``-o``, its lines as ``bundle``; ``serve --json`` prints JSON Lines, one object per
pull it answers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError, DecodeError
from agent.logs import codes
from agent.logs.jsonlog import LEVELS
from drivers.cli.common import add_config_options, add_json_option
from drivers.cli.composed import composed
from drivers.cli.output import JSON_LINES_HELP, JsonLines, print_json, write_output_file
from drivers.clock import SystemClock

if TYPE_CHECKING:
    from agent.keystore import DataKeys
    from agent.logs.bundle import BundleQuery
    from agent.ports import AuditSink
    from drivers.compose import Composition

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str | None, now: float) -> float | None:
    """Epoch seconds, ISO 8601 (UTC unless it says otherwise) or a relative age like 2h."""
    if text is None:
        return None
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(
            f"cannot parse time {text[:40]!r} (epoch, ISO 8601 or 10m/2h/7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _query(args: argparse.Namespace, now: float) -> BundleQuery:
    from agent.logs.bundle import BundleQuery  # lazy: --help stays light

    return BundleQuery(
        since=parse_time(args.since, now),
        until=parse_time(args.until, now),
        tail=args.tail,
        level=args.level,
        grep=args.grep,
    )


def _keys(c: Composition) -> DataKeys:
    keys = c.ledger.keys
    assert keys is not None  # compose() hands the ledger the one DataKeys
    return keys


def _progress(done: int, total: int) -> None:
    percent = 100 * done // total if total else 100
    print(f"\rreceived {done}/{total} bytes ({percent}%)", end="", file=sys.stderr, flush=True)


def _write(data: bytes, output: str | None) -> None:
    if output:
        write_output_file(pathlib.Path(output), data)
        print(f"wrote {len(data)} bytes to {output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _lines(data: bytes) -> list[object]:
    """A bundle's lines, parsed; a line that is not JSON (a hostile device's) stays text."""
    parsed: list[object] = []
    for raw in data.decode("utf-8", "replace").splitlines():
        if raw.strip():
            try:
                parsed.append(json.loads(raw))
            except ValueError:
                parsed.append(raw)
    return parsed


def _deliver(data: bytes, args: argparse.Namespace, **facts: object) -> None:
    """The bundle to -o or stdout; under --json a document of facts (and the lines)."""
    if not args.json:
        _write(data, args.output)
        return
    document: dict[str, object] = {"bytes": len(data), **facts}
    if args.output:
        write_output_file(pathlib.Path(args.output), data)
        document["file"] = args.output
    else:
        document["bundle"] = _lines(data)
    print_json(document)


def _bundle(args: argparse.Namespace) -> int:
    from drivers.logs.feature import bundle_provider  # lazy: --help stays light
    from drivers.logs.store import LogStore

    with composed(args) as c:
        config = c.config
        now = c.clock.now()
        query = _query(args, now)
        store = LogStore(c.layout.root, config.logs, keys=_keys(c))
        print(f"collecting logs from {store.directory} ...", file=sys.stderr)
        bundle = bundle_provider(store, c.redactor, config.logs)(query, now)
        c.audit.record(
            "logs.pull", {"channel": "cli", "bytes": len(bundle.data), "lines": bundle.lines}, now
        )
    if bundle.truncated:
        print(f"bundle truncated: {bundle.dropped_lines} older lines dropped "
              f"(cap {config.logs.max_bundle_bytes} bytes)", file=sys.stderr)
    _deliver(bundle.data, args, lines=bundle.lines, truncated=bundle.truncated,
             dropped_lines=bundle.dropped_lines)
    return 0


def _pull(args: argparse.Namespace) -> int:
    if args.code:
        method, secret = "code", args.code
    else:
        method = "token"
        secret = pathlib.Path(args.token_file).read_text(encoding="utf-8").strip()
    from drivers.logs.serial_link import SerialChannel, TechnicianClient  # lazy: --help

    now = SystemClock().now()
    query = _query(args, now).describe()
    channel = SerialChannel(args.port, args.baud)
    try:
        client = TechnicianClient(channel, timeout=args.timeout)
        print(f"authenticating on {args.port} ...", file=sys.stderr)
        data = client.pull(method, secret, query, _progress)
        print(file=sys.stderr)
    finally:
        channel.close()
    _deliver(data, args, port=args.port)
    return 0


class _Announced:
    """The audit sink; under ``serve --json`` each record is also an event on stdout."""

    def __init__(self, audit: AuditSink, lines: JsonLines | None) -> None:
        self._audit = audit
        self._lines = lines
        self.records = 0

    def record(self, kind: str, detail: Mapping[str, object], now: float) -> None:
        self._audit.record(kind, detail, now)
        self.records += 1
        if self._lines is not None:
            self._lines.event(kind, at=now, detail=dict(detail))


def _serve(args: argparse.Namespace) -> int:
    from drivers.logs.feature import auth_limiter, build_serial_log_service  # lazy: --help
    from drivers.logs.store import LogStore

    with composed(args) as c:
        config = c.config
        store = LogStore(c.layout.root, config.logs, keys=_keys(c))
        lines = JsonLines() if args.json else None
        audit = _Announced(c.audit, lines)
        service = build_serial_log_service(
            config, store, c.redactor, auth_limiter(config, c.clock), audit=audit, port=args.port
        )
        if service is None:
            raise ConfigError("logs.serial_port", "no serial port configured; pass --port")
        port = args.port or config.logs.serial_port
        if lines is not None:
            lines.event("serving", port=port)
        else:
            print(f"serving log pulls on {port}", file=sys.stderr)
        deadline = c.clock.monotonic() + args.duration if args.duration else None
        service.start()
        try:
            while deadline is None or c.clock.monotonic() < deadline:
                service.tick(c.clock.now())
                if not service.busy:
                    time.sleep(0.01)
        finally:
            service.stop()
    if lines is not None:
        lines.result(port=port, pulls=audit.records, dropped_peers=service.dropped_peers)
    return 0


def _codes(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps([{"code": c.code, "message_id": c.message_id, "summary": c.summary}
                          for c in codes.REGISTRY.values()], indent=2))
        return 0
    for code in codes.REGISTRY.values():
        print(f"{code.code:13} {code.message_id}  {code.summary}")
    return 0


def _add_query_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help="epoch, ISO 8601 or age like 2h")
    parser.add_argument("--until", help="epoch, ISO 8601 or age like 10m")
    parser.add_argument("--tail", type=int, default=None, help="only the last N matching lines")
    parser.add_argument("--level", default="DEBUG", choices=sorted(LEVELS, key=LEVELS.__getitem__),
                        help="only lines at this level or above (default DEBUG)")
    parser.add_argument("--grep", default=None, help="plain substring, case-insensitive")
    parser.add_argument("-o", "--output", default=None, help="file (default: stdout)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("logs", help="redacted log bundles and error codes")
    sub = parser.add_subparsers(dest="logs_command", metavar="ACTION")
    sub.required = True
    bundle = sub.add_parser("bundle", help="write a redacted log bundle from this device")
    add_config_options(bundle)
    _add_query_options(bundle)
    add_json_option(bundle, "print one JSON document: the bundle's facts and, without -o, "
                    "its lines (parsed) as bundle")
    bundle.set_defaults(func=_bundle)
    pull = sub.add_parser("pull", help="fetch a bundle from a device over its serial console")
    pull.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    pull.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    pull.add_argument("--timeout", type=float, default=10.0, help="seconds per reply (default 10)")
    who = pull.add_mutually_exclusive_group(required=True)
    who.add_argument("--code", help="the device's verification code")
    who.add_argument("--token-file", help="file holding a technician token")
    _add_query_options(pull)
    add_json_option(pull, "print one JSON document: the bundle's size and, without -o, "
                    "its lines (parsed) as bundle")
    pull.set_defaults(func=_pull)
    serve = sub.add_parser(
        "serve", help="answer technician pulls on a serial port (when the agent is down)"
    )
    add_config_options(serve)
    serve.add_argument("--port", default=None, help="default: logs.serial_port")
    serve.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until Ctrl-C")
    add_json_option(serve, JSON_LINES_HELP)
    serve.set_defaults(func=_serve)
    listing = sub.add_parser("codes", help="list the stable error codes")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_codes)
