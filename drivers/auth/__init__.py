"""The client side of signed commands: owner keys and a command client over MQTT.

:mod:`drivers.auth.client` is what an owner's tool (or ``edge-agent remote``)
uses to command a device, :mod:`drivers.auth.keys` the key files it signs
with; the device side lives in :mod:`agent.auth`.
"""
