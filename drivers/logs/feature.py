"""The logs feature: the redacted on-device log store and the technician's ways to it.

* the store (daemon: the root logger's handler, with crash capture; CLI: read only),
  a personal-data holding with its own retention, wiped when ``troubleshooting_logs``
  is withdrawn: a line is redacted only of what was known when it was written, so
  any line may still be personal, and the store exists for troubleshooting alone.
  No bundle is ever kept on the device (each is built for its request), so the
  store is all there is to purge;
* the console copy (stderr, journald) redacted like the store, in both modes;
* ``logs.upload`` over MQTT, only while ``troubleshooting_logs`` is consented;
* the serial console pull and the LAN endpoint, sharing one attempt limiter that
  survives restarts; the LAN endpoint, like ``logs.upload``, only with that consent.

The helpers below are also what the ``edge-agent logs`` CLI builds on.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Callable

from agent.auth.roles import Role
from agent.config import AgentConfig
from agent.consent import ConsentLedger
from agent.errors import ConsentRequiredError
from agent.feature import ConsentView, Feature, FeatureContext, Holding
from agent.layout import StateLayout
from agent.logs.bundle import Bundle, BundleQuery, build_bundle
from agent.logs.pull import AuthLimiter, BundleProvider, PullSession, TechnicianSecrets
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from agent.ports import AuditSink, Clock, CommandArgs, CommandHandler, CommandResult, Service
from agent.purposes import Purpose
from agent.rights.registry import RetentionKind
from drivers.httpserve import ServerLimits
from drivers.limitstore import LimitStore
from drivers.logs.http_api import LogsHttpApi, LogsLanServer
from drivers.logs.serial_link import SerialChannel, SerialLogService
from drivers.logs.setup import install_logging, redact_console
from drivers.logs.store import LogStore


def build_logs(ctx: FeatureContext) -> Feature:
    config = ctx.config
    closers: tuple[Callable[[], None], ...] = ()
    if ctx.daemon:
        handle = install_logging(config, ctx.redactor, clock=ctx.clock, keys=ctx.keys)
        store, closers = handle.store, (handle.close,)
    else:
        store = LogStore(ctx.layout.root, config.logs, keys=ctx.keys)
        closers = (redact_console(ctx.redactor),)
    holding = Holding(
        store,
        purpose=Purpose.TROUBLESHOOTING_LOGS,
        retention=(RetentionKind.LOGS, store),
        on_withdrawal=withdrawal_purge(store, ctx.consent),
    )
    bundles = bundle_provider(store, ctx.redactor, config.logs)
    commands = {
        "logs.upload": logs_upload_handler(
            bundles, ctx.consent.is_granted, clock=ctx.clock, audit=ctx.audit
        )
    }
    services: list[Service] = []
    if ctx.daemon:
        # Serial console and LAN share one limiter: guesses on one count on the other.
        limiter = auth_limiter(config, ctx.clock)
        serial = build_serial_log_service(config, store, ctx.redactor, limiter, audit=ctx.audit)
        lan = build_logs_lan_service(
            config,
            store,
            ctx.redactor,
            limiter,
            is_granted=fresh_consent(ctx.consent),
            audit=ctx.audit,
            clock=ctx.clock,
        )
        services += [s for s in (serial, lan) if s is not None]
    return Feature(
        "logs",
        services=tuple(services),
        commands=commands,
        # A technician may pull logs (the handler also needs troubleshooting_logs
        # consent); bundles travel only sealed to the requester.
        command_roles={"logs.upload": frozenset({Role.TECHNICIAN})},
        confidential_commands=frozenset({"logs.upload"}),
        holdings=(holding,),
        closers=closers,
    )


def last_withdrawal(consent: ConsentView, purpose: Purpose) -> float | None:
    """When ``purpose`` was last withdrawn, from the ledger's history (None: never, or unknown)."""
    if not isinstance(consent, ConsentLedger):
        return None
    times = [
        float(entry["at"])
        for entry in consent.history()
        if entry["purpose"] == purpose.value
        and entry["action"] == "withdraw"
        and isinstance(entry["at"], int | float)
    ]
    return max(times, default=None)


def withdrawal_purge(store: LogStore, consent: ConsentView) -> Callable[[], int]:
    """Withdrawing troubleshooting_logs: every line and crash record up to that moment goes.

    Up to the withdrawal, not the whole store: the ledger re-runs the hook at every
    start (a crash between commit and purge), and a device without the consent keeps
    logging, so a full wipe there would erase each run's logs at the next start.
    """

    def purge() -> int:
        if not isinstance(consent, ConsentLedger):
            return store.erase_personal_data()  # no history to read: fail closed
        withdrawn = last_withdrawal(consent, Purpose.TROUBLESHOOTING_LOGS)
        return 0 if withdrawn is None else store.purge_older_than(withdrawn)

    return purge


def bundle_provider(store: LogStore, redactor: Redactor, settings: LogSettings) -> BundleProvider:
    def provide(query: BundleQuery, now: float) -> Bundle:
        return build_bundle(
            store.iter_lines(), query, redactor, max_bytes=settings.max_bundle_bytes, now=now
        )

    return provide


def logs_upload_handler(
    bundles: BundleProvider,
    is_granted: Callable[[Purpose], bool],
    *,
    clock: Clock,
    audit: AuditSink | None = None,
) -> CommandHandler:
    """``logs.upload``: the bundle, only while troubleshooting_logs is consented."""

    def handle(args: CommandArgs) -> CommandResult:
        if not is_granted(Purpose.TROUBLESHOOTING_LOGS):
            raise ConsentRequiredError(Purpose.TROUBLESHOOTING_LOGS.value)
        query = BundleQuery.from_args(args)
        now = clock.now()
        bundle = bundles(query, now)
        if audit is not None:
            audit.record(
                "logs.pull",
                {"channel": "mqtt", "bytes": len(bundle.data), "lines": bundle.lines},
                now,
            )
        return {
            "bundle": bundle.data,
            "lines": bundle.lines,
            "truncated": bundle.truncated,
            "dropped_lines": bundle.dropped_lines,
            "sha256": hashlib.sha256(bundle.data).hexdigest(),
        }

    return handle


def read_verification_code(state_dir: pathlib.Path) -> Callable[[], str | None]:
    """A source for the verification code the provisioning feature keeps in its binding file."""
    binding = StateLayout(state_dir).binding

    def read() -> str | None:
        try:
            data = json.loads(binding.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        code = data.get("verification_code") if isinstance(data, dict) else None
        return code if isinstance(code, str) and code else None

    return read


def read_technician_token(path: pathlib.Path | None) -> Callable[[], str | None]:
    def read() -> str | None:
        if path is None:
            return None
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return token or None

    return read


def technician_secrets(config: AgentConfig) -> TechnicianSecrets:
    """The verification code from binding.json and the optional technician token file."""
    return TechnicianSecrets(
        read_verification_code(config.state_dir),
        read_technician_token(config.logs.technician_token_file),
    )


def auth_limiter(config: AgentConfig, clock: Clock) -> AuthLimiter:
    """One limiter to share between the serial console and the LAN API, kept across restarts."""
    limiter = AuthLimiter(config.logs.max_failed_auth, config.logs.auth_lockout_seconds)
    LimitStore.attach(
        StateLayout(config.state_dir).logs_auth_limits, limiter, clock, "technician login limiter"
    )
    return limiter


def fresh_consent(consent: ConsentView) -> Callable[[Purpose], bool]:
    """``is_granted`` that first re-reads the ledger (when it is one).

    The LAN endpoint answers from its own threads, between loop passes: a
    withdrawal the CLI committed a moment ago must already hold there, not only
    after the main loop's next refresh.
    """
    if not isinstance(consent, ConsentLedger):
        return consent.is_granted
    ledger = consent

    def is_granted(purpose: Purpose) -> bool:
        ledger.refresh()
        return ledger.is_granted(purpose)

    return is_granted


def build_serial_log_service(
    config: AgentConfig,
    store: LogStore,
    redactor: Redactor,
    limiter: AuthLimiter,
    *,
    secrets_source: TechnicianSecrets | None = None,
    audit: AuditSink | None = None,
    port: str | None = None,
) -> SerialLogService | None:
    """The console pull service, or None when no port is given or configured."""
    port = port or config.logs.serial_port
    if not port:
        return None
    channel = SerialChannel(port, config.logs.serial_baud)
    provide = bundle_provider(store, redactor, config.logs)
    proof = secrets_source or technician_secrets(config)
    return SerialLogService(
        channel,
        lambda: PullSession(
            proof, limiter, provide, chunk_bytes=config.logs.serial_chunk_bytes, audit=audit
        ),
        write_timeout=config.logs.serial_write_timeout_seconds,
    )


def build_logs_http_api(
    config: AgentConfig,
    store: LogStore,
    redactor: Redactor,
    limiter: AuthLimiter,
    *,
    is_granted: Callable[[Purpose], bool],
    audit: AuditSink | None = None,
) -> LogsHttpApi:
    # A bearer secret crosses the LAN in the request: only the technician token, never the
    # verification code, which must stay a proof-of-possession secret for provisioning.
    lan_secrets = TechnicianSecrets(
        lambda: None, read_technician_token(config.logs.technician_token_file)
    )
    return LogsHttpApi(
        bundle_provider(store, redactor, config.logs),
        lan_secrets,
        limiter,
        is_granted=is_granted,
        audit=audit,
    )


def build_logs_lan_service(
    config: AgentConfig,
    store: LogStore,
    redactor: Redactor,
    limiter: AuthLimiter,
    *,
    is_granted: Callable[[Purpose], bool],
    audit: AuditSink | None = None,
    clock: Clock | None = None,
) -> LogsLanServer | None:
    """The LAN bundle endpoint as a Service, or None when ``logs.lan_port`` is 0."""
    if not config.logs.lan_port:
        return None
    api = build_logs_http_api(
        config, store, redactor, limiter, is_granted=is_granted, audit=audit
    )
    return LogsLanServer(
        api,
        (config.logs.lan_bind_address, config.logs.lan_port),
        clock=clock,
        limits=ServerLimits(
            max_connections=config.logs.lan_max_connections,
            max_connections_per_source=config.logs.lan_max_connections_per_source,
            timeout_seconds=config.logs.lan_timeout_seconds,
        ),
    )
