"""The discovery feature: the ONVIF device service, WS-Discovery answers and the mDNS advert.

Only the daemon speaks on the LAN; ``edge-agent discover`` (the CLI) searches
with its own clients.  The ONVIF service runs whether or not the device is
discoverable (a client that knows the address may use it); WS-Discovery and
mDNS only while it is discoverable.

The ONVIF user: ``onvif.set_credentials`` (the owner's command; a password the
owner gives travels only sealed to the device's key, ``args["sealed"]``,
:mod:`agent.sealedparams`; the result, with a generated password, travels only
sealed to the owner's reply key) or a
file the image provides (``[discovery] onvif_credentials_file``).  Until one
exists every ONVIF operation but GetSystemDateAndTime answers NotAuthorized.
The password is a secret the log redactor knows; the user is erased with the
binding (account cancellation).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from agent.discovery.onvif_auth import OnvifCredentials
from agent.errors import EdgeAgentError
from agent.feature import Feature, FeatureContext, Holding
from agent.ports import CommandArgs, CommandResult, Service
from agent.rights.registry import ErasureScope
from drivers.discovery.onvif_store import (
    OnvifCredentialsHolder,
    OnvifCredentialStore,
    check_password,
    check_username,
    generate_password,
)
from drivers.provisioning.store import FileProvisioningStore
from drivers.sealedparams import sealed_arguments, sealing_key

SET_CREDENTIALS = "onvif.set_credentials"
SEALED_FIELDS = frozenset({"password"})


def build_discovery(ctx: FeatureContext) -> Feature:
    settings = ctx.config.discovery
    file_source = settings.onvif_credentials_file
    store = OnvifCredentialStore(
        ctx.layout, ctx.keys, pathlib.Path(file_source).expanduser() if file_source else None
    )
    holdings = (Holding(OnvifCredentialsHolder(store, ctx.clock), scope=ErasureScope.BINDING),)

    def secrets() -> Iterable[str]:
        try:
            credentials = store.load()
        except EdgeAgentError:
            return []
        return [] if credentials is None else [credentials.password]

    if not ctx.daemon:
        return Feature("discovery", holdings=holdings, secrets=secrets)

    sealing = sealing_key(ctx)

    def set_credentials(given_args: CommandArgs) -> CommandResult:
        # A password the owner gives travels only sealed to the device (agent.sealedparams).
        args = sealed_arguments(ctx, sealing, SET_CREDENTIALS, given_args, SEALED_FIELDS)
        username = check_username(args.get("username"))
        given = args.get("password")
        password = generate_password() if given is None else check_password(given)
        now = ctx.clock.now()
        store.save(OnvifCredentials(username, password), now)
        ctx.redactor.remember(password)
        ctx.audit.record(SET_CREDENTIALS, {"generated": given is None}, now)
        result: dict[str, object] = {"username": username, "generated": given is None}
        if given is None:
            result["password"] = password
        return result

    def feature(*services: Service) -> Feature:
        return Feature(
            "discovery",
            services=services,
            commands={SET_CREDENTIALS: set_credentials},
            # The result may carry the generated password: it travels only sealed.
            confidential_commands=frozenset({SET_CREDENTIALS}),
            holdings=holdings,
            secrets=secrets,
        )

    if not (settings.discoverable or settings.onvif_enabled):
        return feature()
    # lazy: zeroconf and the sockets load only on a daemon that serves the LAN
    from drivers.discovery.service import build_service

    account = FileProvisioningStore(ctx.layout.root, keys=ctx.keys)

    def claimed() -> bool:
        return account.load_account() is not None

    service = build_service(
        ctx.config,
        ctx.clock,
        claimed_fn=claimed,
        store=store,
        lan_discovery=settings.discoverable,
    )
    return feature(service)
