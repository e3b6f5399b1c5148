"""A feature as one unit: what it runs, answers, emits, holds and knows.

Every feature (camera, faces, plates, discovery, provisioning, upgrade, logs,
rights) is built by one function, ``build_<feature>(ctx) -> Feature``, in
``drivers/<feature>/``, from its own section of the configuration and a small
:class:`FeatureContext`.  The composition root (``drivers/compose.py``) turns
the declarations into wiring: services into the loop, commands into the
router, schemas into the minimiser's catalogue, holdings into export, erasure,
withdrawal and retention, secrets into log redaction.  Nothing reaches into a
feature after it is built.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agent.auth.authoriser import CallerSlot
from agent.auth.principals import PrincipalStore
from agent.auth.roles import Role
from agent.config import AgentConfig
from agent.events import EventSchema
from agent.framebus import FrameBus
from agent.layout import StateLayout
from agent.logs.redact import Redactor
from agent.ports import (
    AuditSink,
    Clock,
    CommandHandler,
    PersonalDataHolder,
    RetentionTarget,
    Service,
)
from agent.purposes import Purpose
from agent.rights.registry import ErasureScope, RetentionKind

if TYPE_CHECKING:
    from agent.keystore import DataKeys

log = logging.getLogger(__name__)


class Mode(enum.Enum):
    """Daemon: ``edge-agent run`` with services.  CLI: one-shot commands, stores only."""

    DAEMON = "daemon"
    CLI = "cli"


class ConsentView(Protocol):
    """The consent a feature may ask about (answers from the ledger's per-pass cache)."""

    def is_granted(self, purpose: Purpose) -> bool: ...


@dataclasses.dataclass(frozen=True)
class FeatureContext:
    config: AgentConfig
    mode: Mode
    layout: StateLayout
    clock: Clock
    consent: ConsentView
    audit: AuditSink
    # Frames from the one camera; opaque to the core (numpy arrays in drivers).
    frames: FrameBus[Any]
    # Redacts every log line; knows what all features declared as secrets.
    redactor: Redactor
    # The keys this device obeys and its per-binding device id.
    principals: PrincipalStore
    # Data keys per purpose: every store of personal data seals under them.
    keys: DataKeys
    # True while the broker link is up and every part of the loop beats: the
    # upgrade feature commits a trial boot only then.
    healthy: Callable[[], bool] = lambda: False
    # Messages waiting in the outbox (Home Assistant's outbox depth sensor).
    queue_depth: Callable[[], int] = lambda: 0
    # Who gave the command being handled, and the signed command itself (what
    # sealed parameters are bound to); the router fills it around each handler.
    callers: CallerSlot = dataclasses.field(default_factory=CallerSlot)

    @property
    def daemon(self) -> bool:
        return self.mode is Mode.DAEMON


@dataclasses.dataclass(frozen=True)
class Holding:
    """A store of personal data and the rules that reach it.

    ``purpose``: withdrawing it erases the store (None: kept until an erasure
    request).  ``scope``: which erasure requests reach it.  ``retention``: the
    age limit that applies to it, if any, and the store that purges by age
    (usually the holder itself).  ``on_withdrawal``: what the withdrawal runs
    instead of a full erasure, for a store that keeps filling after it (the
    logs: everything up to the withdrawal goes; the hook is re-run at every
    start, which must not wipe what was written since).
    """

    holder: PersonalDataHolder
    purpose: Purpose | None = None
    scope: ErasureScope = ErasureScope.PERSONAL
    retention: tuple[RetentionKind, RetentionTarget] | None = None
    on_withdrawal: Callable[[], int] | None = None


class RetainedMessages(Protocol):
    """Retained MQTT messages a feature keeps under the device's topics.

    ``retained_messages()`` maps a topic below ``<prefix>/<device>/`` to its
    payload; the runtime (re)publishes them on every connection and whenever
    ``version`` changes.
    """

    version: int

    def retained_messages(self) -> Mapping[str, bytes]: ...


def _none() -> Iterable[str]:
    return ()


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    services: tuple[Service, ...] = ()
    commands: Mapping[str, CommandHandler] = dataclasses.field(default_factory=dict)
    # Roles besides the owner that may give a command; unlisted: the owner's alone.
    command_roles: Mapping[str, frozenset[Role]] = dataclasses.field(default_factory=dict)
    # Commands whose result travels only sealed to the requester's reply key.
    confidential_commands: frozenset[str] = frozenset()
    event_schemas: tuple[EventSchema, ...] = ()
    holdings: tuple[Holding, ...] = ()
    # Literals that must never appear in a log line (names, plates, SSIDs).
    secrets: Callable[[], Iterable[str]] = _none
    retained: tuple[RetainedMessages, ...] = ()
    closers: tuple[Callable[[], None], ...] = ()

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("closing feature %s failed", self.name)
