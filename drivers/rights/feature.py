"""The rights feature: ``data.export``, ``data.erase`` and retention over every holding.

Built last by the composition root, from the registry of every other
feature's holdings (plus the consent ledger and the outbox).  An erasure's
reply names the retained MQTT topics that may carry personal data; the
runtime clears each with an empty retained message before it replies.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence

from agent.atomicfile import load_or_create_secret
from agent.config import AgentConfig
from agent.feature import Feature, FeatureContext
from agent.layout import StateLayout
from agent.ports import AuditSink, Clock, CommandArgs, CommandHandler, Outcome, Service
from agent.rights.registry import DataRegistry
from agent.rights.requests import RightsHandlers
from agent.rights.retention import RetentionReport, RetentionService


def load_or_create_device_key(state_dir: pathlib.Path) -> bytes:
    """The key signing rights replies; created once (0600, fsynced) on first use."""
    return load_or_create_secret(StateLayout(state_dir).rights_key)


def build_rights_handlers(
    config: AgentConfig,
    registry: DataRegistry,
    *,
    clock: Clock,
    audit: AuditSink | None = None,
    retained_topics: Callable[[], Sequence[str]] = tuple,
    device_key: bytes | None = None,
) -> dict[str, CommandHandler]:
    """``{"data.export": ..., "data.erase": ...}``; the erase outcome lists topics to clear."""
    handlers = RightsHandlers(
        registry,
        device_key=device_key or load_or_create_device_key(config.state_dir),
        clock=clock,
        audit=audit,
        retained_topics=retained_topics,
    )

    def erase(args: CommandArgs) -> Outcome:
        result = handlers.data_erase(args)
        topics = result.get("clear_retained_topics", [])
        clear = tuple(t for t in topics if isinstance(t, str)) if isinstance(topics, list) else ()
        return Outcome(result, clear_retained=clear)

    return {"data.export": handlers.data_export, "data.erase": erase}


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
    commands = build_rights_handlers(
        ctx.config, registry, clock=ctx.clock, audit=ctx.audit, retained_topics=retained_topics
    )
    services: tuple[Service, ...] = ()
    if ctx.daemon:
        services = (build_retention_service(ctx.config, registry, audit=ctx.audit),)
    return Feature("rights", services=services, commands=commands)
