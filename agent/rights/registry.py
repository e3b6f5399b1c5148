"""The set of stores holding personal data, as registered by the composition root.

Features own their stores; this registry only knows them through the
:class:`~agent.ports.PersonalDataHolder` and :class:`~agent.ports.RetentionTarget`
protocols.  A holder is tagged with an :class:`ErasureScope`: ordinary personal
data goes on every erasure, while Wi-Fi credentials and the cloud binding are
only wiped when the request asks for them (or the account is cancelled).
"""

from __future__ import annotations

import dataclasses
import enum

from agent.errors import ConfigError
from agent.ports import PersonalDataHolder, RetentionTarget
from agent.purposes import (
    BINDING_DOMAIN,
    CAMERAS_DOMAIN,
    CONSENTABLE,
    ONVIF_DOMAIN,
    WIFI_DOMAIN,
)


class ErasureScope(enum.Enum):
    PERSONAL = "personal"
    WIFI = "wifi"
    BINDING = "binding"


def key_domains(scope: ErasureScope) -> tuple[str, ...]:
    """The data-key domains an erasure of ``scope`` destroys before it purges anything."""
    if scope is ErasureScope.PERSONAL:
        return tuple(p.value for p in CONSENTABLE)
    if scope is ErasureScope.WIFI:
        return (WIFI_DOMAIN,)
    return (BINDING_DOMAIN, ONVIF_DOMAIN, CAMERAS_DOMAIN)


ALL_KEY_DOMAINS = (
    *(p.value for p in CONSENTABLE),
    WIFI_DOMAIN,
    BINDING_DOMAIN,
    ONVIF_DOMAIN,
    CAMERAS_DOMAIN,
)


class RetentionKind(enum.Enum):
    SNAPSHOTS = "snapshots"
    EVENTS = "events"
    LOGS = "logs"
    MATCH_HISTORY = "match_history"


@dataclasses.dataclass(frozen=True)
class RegisteredHolder:
    holder: PersonalDataHolder
    scope: ErasureScope


@dataclasses.dataclass(frozen=True)
class RegisteredTarget:
    target: RetentionTarget
    kind: RetentionKind


class DataRegistry:
    def __init__(self) -> None:
        self._holders: list[RegisteredHolder] = []
        self._targets: list[RegisteredTarget] = []

    def add_holder(
        self, holder: PersonalDataHolder, scope: ErasureScope = ErasureScope.PERSONAL
    ) -> None:
        if any(h.holder.name == holder.name for h in self._holders):
            raise ConfigError("", f"personal-data holder {holder.name!r} registered twice")
        self._holders.append(RegisteredHolder(holder, scope))

    def add_retention_target(self, target: RetentionTarget, kind: RetentionKind) -> None:
        self._targets.append(RegisteredTarget(target, kind))

    @property
    def holders(self) -> tuple[RegisteredHolder, ...]:
        return tuple(self._holders)

    @property
    def targets(self) -> tuple[RegisteredTarget, ...]:
        return tuple(self._targets)
