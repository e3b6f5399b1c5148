"""The rights feature: ``data.export``, ``data.erase``, retention and notices to receivers.

Built last by the composition root, from the registry of every other
feature's holdings (plus the consent ledger and the outbox).  An erasure's
reply names the retained MQTT topics that may carry personal data; the
runtime clears each with an empty retained message before it replies.  The
daemon also publishes a tombstone after each withdrawal or erasure and the
audit chain's head (:mod:`agent.rights.notices`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence

from agent import minimise
from agent.atomicfile import load_or_create_secret
from agent.audit import AuditLog
from agent.config import AgentConfig
from agent.consent import ConsentLedger
from agent.events import Event
from agent.feature import Feature, FeatureContext, RetainedMessages
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.ports import AuditSink, Clock, CommandArgs, CommandHandler, Outcome, Service
from agent.purposes import Purpose
from agent.rights.notices import (
    AUDIT_HEAD,
    TOMBSTONE,
    DevPseudonym,
    NoticeService,
)
from agent.rights.registry import ALL_KEY_DOMAINS, DataRegistry
from agent.rights.requests import MAX_REPLY_BYTES, RightsHandlers
from agent.rights.retention import RetentionReport, RetentionService


def load_or_create_device_key(state_dir: pathlib.Path) -> bytes:
    """The key signing rights replies; created once (0600, fsynced) on first use."""
    return load_or_create_secret(StateLayout(state_dir).rights_key)


def retired_device_pseudonym(config: AgentConfig) -> DevPseudonym:
    """The ``dev`` pseudonym events of a purpose carried under a given key generation.

    A tombstone names it so receivers can find the records of the retired generation.
    """
    secret = minimise.load_or_create_secret(config.state_dir)
    serial = config.device.serial_number

    def dev(purpose: Purpose, generation: int) -> str:
        pseudonymiser = minimise.Pseudonymiser(secret, lambda _: generation)
        return pseudonymiser.pseudonym(purpose, "device", serial)

    return dev


def build_rights_handlers(
    config: AgentConfig,
    registry: DataRegistry,
    *,
    clock: Clock,
    audit: AuditSink | None = None,
    retained_topics: Callable[[], Sequence[str]] = tuple,
    device_key: bytes | None = None,
    generations: Callable[[], Mapping[str, int]] | None = None,
    max_reply_bytes: int | None = MAX_REPLY_BYTES,
    keys: DataKeys | None = None,
) -> dict[str, CommandHandler]:
    """``{"data.export": ..., "data.erase": ...}``; the erase outcome lists topics to clear.

    ``max_reply_bytes`` bounds an export sent over MQTT; the CLI passes None.
    """
    handlers = make_rights_handlers(
        config, registry, clock=clock, audit=audit, retained_topics=retained_topics,
        device_key=device_key, generations=generations, max_reply_bytes=max_reply_bytes,
        keys=keys,
    )
    return rights_commands(handlers)


def make_rights_handlers(
    config: AgentConfig,
    registry: DataRegistry,
    *,
    clock: Clock,
    audit: AuditSink | None = None,
    retained_topics: Callable[[], Sequence[str]] = tuple,
    device_key: bytes | None = None,
    generations: Callable[[], Mapping[str, int]] | None = None,
    max_reply_bytes: int | None = MAX_REPLY_BYTES,
    keys: DataKeys | None = None,
) -> RightsHandlers:
    return RightsHandlers(
        registry,
        device_key=device_key or load_or_create_device_key(config.state_dir),
        clock=clock,
        audit=audit,
        # The export includes the trail and its head; a test's stand-in sink has none.
        audit_trail=audit if isinstance(audit, AuditLog) else None,
        retained_topics=retained_topics,
        generations=generations or dict,
        max_reply_bytes=max_reply_bytes,
        keys=keys,
    )


def rights_commands(handlers: RightsHandlers) -> dict[str, CommandHandler]:
    def erase(args: CommandArgs) -> Outcome:
        result = handlers.data_erase(args)
        topics = result.get("clear_retained_topics", [])
        clear = tuple(t for t in topics if isinstance(t, str)) if isinstance(topics, list) else ()
        return Outcome(result, clear_retained=clear)

    return {
        "data.export": handlers.data_export,
        "data.erase": erase,
        "data.rotate_keys": handlers.data_rotate_keys,
    }


def recover_crypto_erase(
    keys: DataKeys, ledger: ConsentLedger, handlers: RightsHandlers, now: float
) -> None:
    """Finish destructions, withdrawals, erasures and rotations a kill interrupted.

    In this order: a half-destroyed key first (its mark is already written), then
    the intents (each destroys again before it purges), and a rotation last,
    so a reseal never runs under a key that an intent is about to destroy.
    """
    keys.finish_destruction(ALL_KEY_DOMAINS)
    ledger.resume_withdrawals(now)
    handlers.resume_erasures()
    handlers.finish_rotations()


class KeyRotationService:
    """Rotates a domain's key after one of its items was removed (DataKeys.request_rotation).

    On the main loop, at most once every ``ROTATION_DELAY_SECONDS`` per batch of
    requests: removing ten people in a row costs one reseal, not ten.
    """

    name = "key-rotation"
    ROTATION_DELAY_SECONDS = 2.0

    def __init__(self, keys: DataKeys, handlers: RightsHandlers, clock: Clock) -> None:
        self._keys = keys
        self._handlers = handlers
        self._clock = clock
        self._seen_at: float | None = None

    def start(self) -> None:
        self._rotate()  # requests a kill left behind

    def tick(self, now: float) -> Sequence[Event]:
        if not self._keys.rotation_requests():
            self._seen_at = None
            return ()
        monotonic = self._clock.monotonic()
        if self._seen_at is None:
            self._seen_at = monotonic
        if monotonic - self._seen_at >= self.ROTATION_DELAY_SECONDS:
            self._rotate()
            self._seen_at = None
        return ()

    def _rotate(self) -> None:
        pending = self._keys.rotation_requests()
        if not pending:
            return
        result = self._handlers.rotate(pending)
        if not result.get("failed"):
            self._keys.clear_rotation_requests(pending)

    def stop(self) -> None:
        pass


def build_retention_service(
    config: AgentConfig,
    registry: DataRegistry,
    *,
    audit: AuditSink | None = None,
    on_report: Callable[[RetentionReport], None] | None = None,
) -> RetentionService:
    return RetentionService(registry, config.retention, audit=audit, on_report=on_report)


def build_rights(
    ctx: FeatureContext,
    registry: DataRegistry,
    *,
    retained_topics: Callable[[], Sequence[str]] = tuple,
) -> Feature:
    ledger = ctx.consent if isinstance(ctx.consent, ConsentLedger) else None
    handlers = make_rights_handlers(
        ctx.config,
        registry,
        clock=ctx.clock,
        audit=ctx.audit,
        retained_topics=retained_topics,
        generations=ledger.generations if ledger is not None else None,
        keys=ctx.keys,
    )
    commands = rights_commands(handlers)
    if ctx.daemon and ledger is not None:
        # Before any service starts: finish what a kill interrupted.
        recover_crypto_erase(ctx.keys, ledger, handlers, ctx.clock.now())
    services: list[Service] = []
    retained: tuple[RetainedMessages, ...] = ()
    if ctx.daemon:
        services.append(build_retention_service(ctx.config, registry, audit=ctx.audit))
        services.append(KeyRotationService(ctx.keys, handlers, ctx.clock))
        if isinstance(ctx.audit, AuditLog):
            notices = NoticeService(
                ctx.audit,
                ctx.layout.privacy_notices,
                dev_pseudonym=retired_device_pseudonym(ctx.config),
                head_interval_seconds=ctx.config.privacy.audit_head_interval_seconds,
            )
            services.append(notices)
            retained = (notices,)
    # A copy of someone's data never crosses the broker in clear.
    return Feature(
        "rights",
        services=tuple(services),
        commands=commands,
        confidential_commands=frozenset({"data.export"}),
        event_schemas=(TOMBSTONE, AUDIT_HEAD),
        retained=retained,
    )
