"""Safe auto-upgrade: signed SUIT manifests, A/B install, health-gated commit.

Pure core, python-tuf style: :func:`envelope.verify_envelope` is a function of
bytes and a :class:`keys.KeySet`; :mod:`policy` decides what may be installed
and when; :mod:`machine` is the persisted state machine.  All I/O (HTTP,
slots, bootloader environment, state file) sits behind :mod:`ports` and is
implemented in ``drivers/upgrade/``.
"""
