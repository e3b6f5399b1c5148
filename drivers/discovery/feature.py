"""The discovery feature: WS-Discovery answers and the mDNS advert while discoverable.

Only the daemon speaks on the LAN; ``edge-agent discover`` (the CLI) searches
with its own clients.  Discovery holds no personal data.
"""

from __future__ import annotations

from agent.feature import Feature, FeatureContext
from drivers.provisioning.store import FileProvisioningStore


def build_discovery(ctx: FeatureContext) -> Feature:
    if not (ctx.daemon and ctx.config.discovery.discoverable):
        return Feature("discovery")
    # lazy: zeroconf and the sockets load only on a discoverable daemon
    from drivers.discovery.service import build_service

    account = FileProvisioningStore(ctx.layout.root)

    def claimed() -> bool:
        return account.load_account() is not None

    return Feature(
        "discovery", services=(build_service(ctx.config, ctx.clock, claimed_fn=claimed),)
    )
