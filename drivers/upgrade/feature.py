"""The upgrade feature: signed A/B upgrades with a health-gated commit, ``upgrade.*`` commands.

The trial boot is committed only while ``ctx.healthy()`` says the broker link
is up and every part of the loop beats.  Upgrades hold no personal data.
"""

from __future__ import annotations

from agent.feature import Feature, FeatureContext
from agent.upgrade.events import UPGRADE_STATE
from drivers.upgrade.service import build_service


def build_upgrade(ctx: FeatureContext) -> Feature:
    if not (ctx.daemon and ctx.config.upgrade.enabled):
        return Feature("upgrade", event_schemas=(UPGRADE_STATE,))
    service = build_service(ctx.config, ctx.healthy, audit=ctx.audit, clock=ctx.clock)
    return Feature(
        "upgrade",
        services=(service,),
        commands=dict(service.command_handlers()),
        event_schemas=(UPGRADE_STATE,),
    )
