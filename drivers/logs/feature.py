"""The logs feature: the redacted on-device log store and the technician's ways to it.

* the store (daemon: the root logger's handler, with crash capture; CLI: read only),
  a personal-data holding with its own retention;
* ``logs.upload`` over MQTT, only while ``troubleshooting_logs`` is consented;
* the serial console pull and the LAN endpoint, sharing one attempt limiter.

The helpers below are also what the ``edge-agent logs`` CLI builds on.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Callable

from agent.config import AgentConfig
from agent.errors import ConsentRequiredError
from agent.feature import Feature, FeatureContext, Holding
from agent.layout import StateLayout
from agent.logs.bundle import Bundle, BundleQuery, build_bundle
from agent.logs.pull import AuthLimiter, BundleProvider, PullSession, TechnicianSecrets
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from agent.ports import AuditSink, Clock, CommandArgs, CommandHandler, CommandResult, Service
from agent.purposes import Purpose
from agent.rights.registry import RetentionKind
from drivers.logs.http_api import LogsHttpApi, LogsLanServer
from drivers.logs.serial_link import SerialChannel, SerialLogService
from drivers.logs.setup import install_logging
from drivers.logs.store import LogStore


def build_logs(ctx: FeatureContext) -> Feature:
    config = ctx.config
    closers: tuple[Callable[[], None], ...] = ()
    if ctx.daemon:
        handle = install_logging(config, ctx.redactor, clock=ctx.clock)
        store, closers = handle.store, (handle.close,)
    else:
        store = LogStore(ctx.layout.root, config.logs)
    holding = Holding(store, retention=(RetentionKind.LOGS, store))
    bundles = bundle_provider(store, ctx.redactor, config.logs)
    commands = {
        "logs.upload": logs_upload_handler(
            bundles, ctx.consent.is_granted, clock=ctx.clock, audit=ctx.audit
        )
    }
    services: list[Service] = []
    if ctx.daemon:
        # Serial console and LAN share one limiter: guesses on one count on the other.
        limiter = auth_limiter(config)
        serial = build_serial_log_service(config, store, ctx.redactor, limiter, audit=ctx.audit)
        lan = build_logs_lan_service(
            config, store, ctx.redactor, limiter, audit=ctx.audit, clock=ctx.clock
        )
        services += [s for s in (serial, lan) if s is not None]
    return Feature(
        "logs",
        services=tuple(services),
        commands=commands,
        holdings=(holding,),
        closers=closers,
    )


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


def auth_limiter(config: AgentConfig) -> AuthLimiter:
    """One limiter to share between the serial console and the LAN API."""
    return AuthLimiter(config.logs.max_failed_auth, config.logs.auth_lockout_seconds)


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
    )


def build_logs_http_api(
    config: AgentConfig,
    store: LogStore,
    redactor: Redactor,
    limiter: AuthLimiter,
    *,
    audit: AuditSink | None = None,
) -> LogsHttpApi:
    # A bearer secret crosses the LAN in the request: only the technician token, never the
    # verification code, which must stay a proof-of-possession secret for provisioning.
    lan_secrets = TechnicianSecrets(
        lambda: None, read_technician_token(config.logs.technician_token_file)
    )
    return LogsHttpApi(
        bundle_provider(store, redactor, config.logs), lan_secrets, limiter, audit=audit
    )


def build_logs_lan_service(
    config: AgentConfig,
    store: LogStore,
    redactor: Redactor,
    limiter: AuthLimiter,
    *,
    audit: AuditSink | None = None,
    clock: Clock | None = None,
) -> LogsLanServer | None:
    """The LAN bundle endpoint as a Service, or None when ``logs.lan_port`` is 0."""
    if not config.logs.lan_port:
        return None
    api = build_logs_http_api(config, store, redactor, limiter, audit=audit)
    return LogsLanServer(api, (config.logs.lan_bind_address, config.logs.lan_port), clock=clock)
