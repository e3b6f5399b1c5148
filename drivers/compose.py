"""The composition root: the one place that opens the state and builds every feature.

``edge-agent run`` (``Mode.DAEMON``) and every one-shot CLI command
(``Mode.CLI``) come through :func:`compose`.  It opens exactly one database
(consent ledger + outbox), one audit log and, for the daemon, one broker link,
then calls each feature's ``build_<feature>(ctx)`` and turns what the features
declare into wiring:

* services            -> the main loop (``drivers.runtime.Agent``)
* commands            -> the command router (a name registered twice is an error)
* event schemas       -> the minimiser's :class:`~agent.events.SchemaCatalogue`
* personal-data holdings -> export/erase (:class:`DataRegistry`), withdrawal hooks
  on the ledger (one per store and purpose), retention
* secrets             -> the log redactor

The rights feature (``data.export`` / ``data.erase`` / retention) is built last
because it serves every other feature's holdings.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from agent.audit import AuditLog
from agent.auth.authoriser import Authoriser, CallerSlot
from agent.auth.commands import auth_commands
from agent.auth.principals import PrincipalStore
from agent.auth.roles import CommandPolicy
from agent.commands import consent_commands
from agent.config import AgentConfig
from agent.consent import ConsentLedger
from agent.database import Database
from agent.events import DEVICE_STATUS, SchemaCatalogue
from agent.feature import Feature, FeatureContext, Mode
from agent.framebus import FrameBus
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.liveness import Liveness
from agent.logs.redact import Redactor
from agent.outbox import Outbox
from agent.ports import Clock, CommandHandler, Service
from agent.pump import Pump
from agent.rights.registry import DataRegistry, ErasureScope, RetentionKind
from agent.rights.retention import expiry_caps
from agent.stats import STATS
from agent.topics import Topics
from drivers.camera import build_camera
from drivers.clock import SystemClock
from drivers.discovery.feature import build_discovery
from drivers.homeassistant.feature import build_homeassistant
from drivers.logs.feature import build_logs
from drivers.mqtt import MqttLink, client_id_for
from drivers.provisioning.feature import build_provisioning
from drivers.rights.feature import build_rights
from drivers.sdnotify import watchdog_interval
from drivers.sealedparams import build_sealed_params
from drivers.statedir import ensure_state_dir
from drivers.storage import salvage_database
from drivers.upgrade.feature import build_upgrade
from drivers.vision.feature import build_faces, build_plates
from drivers.wakeup import Wakeup

log = logging.getLogger(__name__)

FeatureBuilder = Callable[[FeatureContext], Feature]

# Logs first, so what the other features log while they start is captured (redacted).
DEFAULT_BUILDERS: tuple[FeatureBuilder, ...] = (
    build_logs,
    build_sealed_params,
    build_camera,
    build_faces,
    build_plates,
    build_provisioning,
    build_discovery,
    build_upgrade,
    build_homeassistant,
)

SECRETS_TTL_SECONDS = 30.0
# How late a signed command may arrive (its counter already stops replays).
COMMAND_WINDOW_SECONDS = 300.0
# Answer without a signature: says nothing personal (see Agent.status).
PUBLIC_COMMANDS = frozenset({"status"})


class KnownSecrets:
    """What every feature says must never be logged, read at most every ``ttl`` seconds.

    The redactor asks on every log line; the features read their stores.
    """

    def __init__(
        self, always: Iterable[str], clock: Clock, ttl: float = SECRETS_TTL_SECONDS
    ) -> None:
        self.always = [s for s in always if s]
        self.clock = clock
        self.ttl = ttl
        self.sources: list[Callable[[], Iterable[str]]] = []
        self._values: list[str] = []
        self._expires = float("-inf")

    def __call__(self) -> list[str]:
        now = self.clock.monotonic()
        if now >= self._expires:
            self._expires = now + self.ttl
            found = list(self.always)
            for source in self.sources:
                try:
                    found += [s for s in source() if isinstance(s, str) and s]
                except Exception:
                    log.warning("could not list a feature's secrets for redaction", exc_info=True)
            self._values = found
        return self._values


@dataclasses.dataclass
class Composition:
    """Everything ``compose`` built; closed once, in reverse order, by its owner."""

    config: AgentConfig
    mode: Mode
    layout: StateLayout
    clock: Clock
    db: Database
    audit: AuditLog
    ledger: ConsentLedger
    outbox: Outbox
    topics: Topics
    frames: FrameBus[Any]
    liveness: Liveness
    features: tuple[Feature, ...]
    schemas: SchemaCatalogue
    registry: DataRegistry
    commands: dict[str, CommandHandler]
    redactor: Redactor
    principals: PrincipalStore
    authoriser: Authoriser
    callers: CallerSlot
    confidential: frozenset[str]
    keys: DataKeys
    pump: Pump | None = None
    link: MqttLink | None = None
    wake: Wakeup = dataclasses.field(default_factory=Wakeup)

    @property
    def services(self) -> list[Service]:
        return [s for f in self.features for s in f.services]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def close(self) -> None:
        for feature in reversed(self.features):
            feature.close()
        if self.link is not None:
            self.link.close()
        self.audit.close()
        self.db.close()
        self.wake.close()


def prepare_state_dir(layout: StateLayout) -> None:
    """Create the state directory, private, and prove it writable; else StateDirError."""
    ensure_state_dir(layout.root)


def compose(
    config: AgentConfig,
    mode: Mode,
    *,
    builders: Sequence[FeatureBuilder] | None = None,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> Composition:
    """Open the state once and build every feature for ``mode``; close the result.

    ``builders`` defaults to :data:`DEFAULT_BUILDERS`; ``()`` builds the spine alone.
    """
    builders = DEFAULT_BUILDERS if builders is None else builders
    clock = clock or SystemClock()
    layout = StateLayout(config.state_dir)
    prepare_state_dir(layout)
    # Only the daemon may move a damaged database aside: the CLI would pull it from under it.
    db = Database(
        layout.database,
        salvage=salvage_database if mode is Mode.DAEMON else None,
        wal_max_bytes=config.storage.wal_max_bytes,
    )
    audit = AuditLog(layout.audit)
    keys = DataKeys(layout)
    ledger = ConsentLedger(db, config.privacy.policy_version, audit=audit, keys=keys)
    outbox = Outbox(
        db,
        max_messages=config.outbox.max_messages,
        default_expiry_seconds=config.outbox.default_expiry_seconds,
        layout=layout,
        storage=config.storage if mode is Mode.DAEMON else None,
        keys=keys,
    )
    principals = PrincipalStore(db, keys)
    # Topics name the binding, never the serial number.
    topics = Topics(config.mqtt.topic_prefix, principals.device_id)
    # A part of the loop silent for two watchdog periods is wedged.
    interval = watchdog_interval(environ) or 30.0
    liveness = Liveness(max_silence=interval * config.runtime.watchdog_fraction * 2)
    wake = Wakeup()
    pump: Pump | None = None
    link: MqttLink | None = None
    if mode is Mode.DAEMON:
        pump = Pump(outbox, window=config.mqtt.max_inflight, batch=config.outbox.replay_batch)
        outbox.on_committed = pump.offer
        if config.mqtt.enabled:
            link = MqttLink(
                config.mqtt,
                topics,
                pump,
                wake,
                client_id=config.mqtt.client_id or client_id_for(principals.device_id),
            )

    def healthy() -> bool:
        connected = link is not None and link.connected
        return connected and liveness.healthy(clock.monotonic())

    secrets = KnownSecrets([config.device.serial_number], clock)
    redactor = Redactor(secrets)
    callers = CallerSlot()
    ctx = FeatureContext(
        config=config,
        mode=mode,
        layout=layout,
        clock=clock,
        consent=ledger,
        audit=audit,
        frames=FrameBus(),
        healthy=healthy,
        queue_depth=lambda: len(outbox),
        redactor=redactor,
        principals=principals,
        keys=keys,
        callers=callers,
    )
    features: list[Feature] = []
    try:
        for build in builders:
            features.append(build(ctx))
        registry = _registry(ledger, outbox, features)
        registry.add_holder(principals, ErasureScope.BINDING)
        features.append(build_rights(ctx, registry, retained_topics=lambda: [topics.status]))
        secrets.sources += [f.secrets for f in features]
        _hook_withdrawals(ledger, features)
        commands = _commands(ledger, clock, callers, principals, features)
        policy = CommandPolicy(public=PUBLIC_COMMANDS)
        for feature in features:
            policy.allow(feature.command_roles)
        authoriser = Authoriser(
            principals,
            policy,
            max_bytes=config.mqtt.max_command_bytes,
            max_skew_seconds=COMMAND_WINDOW_SECONDS,
            audit=audit,
        )
        schemas = SchemaCatalogue(
            [DEVICE_STATUS, STATS, *(s for f in features for s in f.event_schemas)]
        )
        if link is not None:
            # No event waits at the broker longer than its purpose's retention allows.
            link.expiry_caps = expiry_caps(config.retention, schemas)
    except BaseException:
        for feature in reversed(features):
            feature.close()
        audit.close()
        db.close()
        raise
    return Composition(
        config=config,
        mode=mode,
        layout=layout,
        clock=clock,
        db=db,
        audit=audit,
        ledger=ledger,
        outbox=outbox,
        topics=topics,
        frames=ctx.frames,
        liveness=liveness,
        features=tuple(features),
        schemas=schemas,
        registry=registry,
        commands=commands,
        redactor=redactor,
        principals=principals,
        authoriser=authoriser,
        callers=callers,
        confidential=frozenset(n for f in features for n in f.confidential_commands),
        keys=keys,
        pump=pump,
        link=link,
        wake=wake,
    )


def _registry(ledger: ConsentLedger, outbox: Outbox, features: Sequence[Feature]) -> DataRegistry:
    registry = DataRegistry()
    registry.add_holder(ledger)
    registry.add_holder(outbox)
    registry.add_retention_target(outbox, RetentionKind.EVENTS)
    for feature in features:
        for holding in feature.holdings:
            registry.add_holder(holding.holder, holding.scope)
            if holding.retention is not None:
                kind, target = holding.retention
                registry.add_retention_target(target, kind)
    return registry


def _hook_withdrawals(ledger: ConsentLedger, features: Sequence[Feature]) -> None:
    # The outbox purges inside the withdrawal's own transaction; files go right after.
    for feature in features:
        for holding in feature.holdings:
            if holding.purpose is not None:
                hook = holding.on_withdrawal or holding.holder.erase_personal_data
                ledger.add_withdrawal_hook(holding.purpose, holding.holder.name, hook)


def _commands(
    ledger: ConsentLedger,
    clock: Clock,
    callers: CallerSlot,
    principals: PrincipalStore,
    features: Sequence[Feature],
) -> dict[str, CommandHandler]:
    commands: dict[str, CommandHandler] = {
        **consent_commands(ledger, clock, callers),
        **auth_commands(principals, clock, callers),
    }
    for feature in features:
        for name, handler in feature.commands.items():
            if name in commands:
                raise ValueError(f"command {name!r} declared twice ({feature.name})")
            commands[name] = handler
    return commands
