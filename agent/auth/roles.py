"""Roles and which commands each may give.

The owner may give every command.  Other roles get only what a feature grants
them explicitly (``Feature.command_roles``): the installer provisioning, the
technician the logs, a recogniser ``plate.observe``.  A command nobody listed
is the owner's alone, so a new command is closed until someone opens it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class Role(enum.Enum):
    OWNER = "owner"
    INSTALLER = "installer"
    TECHNICIAN = "technician"
    RECOGNISER = "recogniser"

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown role {text!r} (roles: {names})") from None


class CommandPolicy:
    """Command name -> the roles allowed to give it (the owner always is)."""

    def __init__(self, public: Iterable[str] = ()) -> None:
        self._public = frozenset(public)
        self._extra: dict[str, frozenset[Role]] = {}

    def allow(self, grants: Mapping[str, Iterable[Role]]) -> None:
        for name, roles in grants.items():
            self._extra[name] = self._extra.get(name, frozenset()) | frozenset(roles)

    def is_public(self, name: str) -> bool:
        return name in self._public

    def roles_for(self, name: str) -> frozenset[Role]:
        return frozenset({Role.OWNER}) | self._extra.get(name, frozenset())

    def allows(self, name: str, role: Role) -> bool:
        return self.is_public(name) or role in self.roles_for(name)

    def describe(self, name: str) -> str:
        if self.is_public(name):
            return "anyone"
        return " or ".join(sorted(r.value for r in self.roles_for(name)))
