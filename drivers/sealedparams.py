"""The sealed-parameters feature: the device's sealing key and the command that gives it.

The key (:class:`agent.sealedparams.SealingKey`) is made at the daemon's first
start, wrapped by the device key in ``StateLayout.sealing_key``.  The owner's
tool fetches the public half with the owner-only ``device.sealing_key``
(``{"alg": -25, "key": <32 bytes>, "kid": <hex>}``) or reads it on the device
(``edge-agent auth device-id --json``); why both, and which to trust when, is
in :mod:`agent.sealedparams`.  Secret-bearing commands open their ``sealed``
argument with :func:`sealed_arguments`, bound to the signed command being
handled.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.feature import Feature, FeatureContext
from agent.ports import CommandArgs, CommandResult
from agent.sealedparams import Binding, SealingKey, unseal_arguments

SEALING_KEY_COMMAND = "device.sealing_key"


def sealing_key(ctx: FeatureContext) -> SealingKey:
    """The device's sealing key (loaded, or made, at the first use)."""
    return SealingKey(ctx.layout.sealing_key, ctx.keys.device)


def sealed_arguments(
    ctx: FeatureContext, key: SealingKey, command: str, args: CommandArgs, secret: frozenset[str]
) -> dict[str, object]:
    """``args`` with the secret fields taken from ``sealed``; refuses them in clear."""
    signed = ctx.callers.current.command
    binding = (
        None
        if signed is None
        else Binding(signed.device_id, signed.name, signed.counter, signed.timestamp)
    )
    return unseal_arguments(
        args, command=command, secret_fields=secret, opener=key, binding=binding
    )


def build_sealed_params(ctx: FeatureContext) -> Feature:
    key = sealing_key(ctx)

    def secrets() -> Iterable[str]:
        return key.secrets()

    if not ctx.daemon:
        return Feature("sealed_params", secrets=secrets)
    key.public_key()  # made now, at the first start, not at the first secret command

    def give_key(_: CommandArgs) -> CommandResult:
        return key.describe()

    return Feature(
        "sealed_params",
        # Owner-only (no command_roles): nobody else sends secrets to the device.
        commands={SEALING_KEY_COMMAND: give_key},
        secrets=secrets,
    )
