"""Configuration of auto-upgrade (section ``[upgrade]``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class UpgradeSettings:
    enabled: bool = True
    auto_install_models: tuple[str, ...] = ()
