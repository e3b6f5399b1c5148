"""Runtime hooks for logs, rights and retention, for the composition root.

* :func:`install_logging` (re-exported from :mod:`drivers.logs.setup`);
* :func:`build_retention_service` -> :class:`agent.rights.retention.RetentionService`;
* :func:`build_rights_handlers` -> handlers for ``data.export`` / ``data.erase``;
* :func:`logs_upload_handler` -> handler for ``logs.upload`` (consent-gated);
* :func:`build_serial_log_service` -> the serial console pull service;
* :class:`drivers.logs.http_api.LogsHttpApi` for the LAN API.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from collections.abc import Callable, Sequence

from agent.atomicfile import load_or_create_secret
from agent.config import AgentConfig
from agent.errors import ConsentRequiredError
from agent.logs.bundle import Bundle, BundleQuery, build_bundle
from agent.logs.pull import AuthLimiter, BundleProvider, PullSession, TechnicianSecrets
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from agent.ports import AuditSink, CommandArgs, CommandHandler, CommandResult
from agent.purposes import Purpose
from agent.rights.registry import DataRegistry, ErasureScope, RetentionKind
from agent.rights.requests import RightsHandlers
from agent.rights.retention import RetentionReport, RetentionService
from drivers.logs.files import FileHolder
from drivers.logs.http_api import LogsHttpApi, LogsLanServer
from drivers.logs.serial_link import SerialChannel, SerialLogService
from drivers.logs.setup import LoggingHandle, install_logging
from drivers.logs.store import LogStore

__all__ = [
    "LoggingHandle",
    "auth_limiter",
    "build_logs_http_api",
    "build_logs_lan_service",
    "build_retention_service",
    "build_rights_handlers",
    "build_serial_log_service",
    "bundle_provider",
    "cli_redactor",
    "default_registry",
    "install_logging",
    "load_or_create_device_key",
    "logs_upload_handler",
    "read_technician_token",
    "read_verification_code",
    "technician_secrets",
]

DEVICE_KEY_FILE = "rights.key"
# Kept by the provisioning driver: the verification code (device identity, printed on
# the label) and, separately, the account binding an erasure may remove.
PROVISIONING_DIR = "provisioning"
BINDING_FILE = f"{PROVISIONING_DIR}/binding.json"
ACCOUNT_FILES = (f"{PROVISIONING_DIR}/account.json", f"{PROVISIONING_DIR}/used_tokens.json")
SNAPSHOT_DIR = "snapshots"


def cli_redactor(config: AgentConfig) -> Redactor:
    """A redactor knowing what the running agent's does (enrolled names, plates, SSID)."""
    from drivers import features

    return Redactor(lambda: [s for s in features.known_secrets(config) if isinstance(s, str)])


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
    clock: Callable[[], float] = time.time,
    audit: AuditSink | None = None,
) -> CommandHandler:
    """``logs.upload``: the bundle, only while troubleshooting_logs is consented."""

    def handle(args: CommandArgs) -> CommandResult:
        if not is_granted(Purpose.TROUBLESHOOTING_LOGS):
            raise ConsentRequiredError(Purpose.TROUBLESHOOTING_LOGS.value)
        query = BundleQuery.from_args(args)
        now = clock()
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


def load_or_create_device_key(state_dir: pathlib.Path) -> bytes:
    """The key signing rights replies; created once (0600, fsynced) on first use."""
    return load_or_create_secret(state_dir / DEVICE_KEY_FILE)


def read_verification_code(state_dir: pathlib.Path) -> Callable[[], str | None]:
    """A source for the verification code the provisioning helper keeps in binding.json."""

    def read() -> str | None:
        try:
            data = json.loads((state_dir / BINDING_FILE).read_text(encoding="utf-8"))
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


def default_registry(config: AgentConfig, store: LogStore) -> DataRegistry:
    """The stores this package knows: logs, snapshots and the cloud binding.

    The composition root adds the consent ledger, outbox, gallery, watch-list
    and Wi-Fi credentials (with ``ErasureScope.WIFI``) to the result.
    """
    registry = DataRegistry()
    snapshots = FileHolder("snapshots", config.state_dir / SNAPSHOT_DIR)
    registry.add_holder(store)
    registry.add_holder(snapshots)
    binding = FileHolder("binding", *(config.state_dir / name for name in ACCOUNT_FILES))
    registry.add_holder(binding, ErasureScope.BINDING)
    registry.add_retention_target(store, RetentionKind.LOGS)
    registry.add_retention_target(snapshots, RetentionKind.SNAPSHOTS)
    return registry


def build_retention_service(
    config: AgentConfig,
    registry: DataRegistry,
    *,
    audit: AuditSink | None = None,
    on_report: Callable[[RetentionReport], None] | None = None,
) -> RetentionService:
    return RetentionService(registry, config.retention, audit=audit, on_report=on_report)


def build_rights_handlers(
    config: AgentConfig,
    registry: DataRegistry,
    *,
    audit: AuditSink | None = None,
    retained_topics: Callable[[], Sequence[str]] = tuple,
    device_key: bytes | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, CommandHandler]:
    """``{"data.export": ..., "data.erase": ...}`` ready for a CommandRegistry."""
    handlers = RightsHandlers(
        registry,
        device_key=device_key or load_or_create_device_key(config.state_dir),
        clock=clock,
        audit=audit,
        retained_topics=retained_topics,
    )
    return {"data.export": handlers.data_export, "data.erase": handlers.data_erase}


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
) -> LogsLanServer | None:
    """The LAN bundle endpoint as a Service, or None when ``logs.lan_port`` is 0."""
    if not config.logs.lan_port:
        return None
    api = build_logs_http_api(config, store, redactor, limiter, audit=audit)
    return LogsLanServer(api, (config.logs.lan_bind_address, config.logs.lan_port))
