"""The saved Wi-Fi network seeded in a state directory, and what a restart can read of it.

Besides the queued events of :mod:`tests.core.crypto_rig` (``cloud_events``,
``usage_statistics``, images), the seed holds the network the device joined
(``provisioning/wifi.json``, sealed under the ``wifi`` data key; the store
keeps its SSID and that it is secured, never the passphrase, which the Wi-Fi
backend keeps), the bound account (``provisioning/account.json``) and pending
rotation requests for ``wifi`` and ``cloud_events``, which the daemon's
``key-rotation`` service carries out (:class:`drivers.rights.feature.KeyRotationService`).

``python -m tests.core.crypto_rig_wifi CONFIG STATE_DIR...`` starts on each
``STATE_DIR`` in turn as the daemon does (``compose(Mode.DAEMON)``, whose rights
feature finishes interrupted destructions, withdrawals, erasures and
rotations, then ``ConsentLedger.reapply_withdrawals`` as ``Agent.start``),
stops, and prints as one JSON line what can still be read: the network through the
store, the queued events, and from the raw bytes of every file of the state
directory (the SSID or passphrase in clear, and every sealed header with the
key it names).  One process reads many states (a kill test's every kill
point): each has its own composition, keys and database, and the interpreter
start is paid once.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.provisioning.wifi import WifiCredentials
from agent.purposes import WIFI_DOMAIN, Purpose
from agent.rights.registry import ALL_KEY_DOMAINS
from drivers.compose import compose
from drivers.logs.feature import build_logs
from drivers.provisioning.feature import build_provisioning
from drivers.provisioning.store import FileProvisioningStore
from tests.core import crypto_rig, crypto_rig_stores
from tests.core.crypto_rig_stores import load, write_config

__all__ = ["BUILDERS", "PASSPHRASE", "SSID", "restart_and_read", "seed", "write_config"]

SSID = "Quokka-Lantern-WIFI-5G-81c4"
PASSPHRASE = "PASSPHRASE-velvet-anvil-3e09"
ACCOUNT = "owner-ACCOUNT-marker-d71a"
# What the rotation service finds pending (a removal elsewhere would add its own).
ROTATION_REQUESTS = (WIFI_DOMAIN, Purpose.CLOUD_EVENTS.value)
# What a daemon builds that holds or logs the network: the logs first, as the daemon does.
BUILDERS = (build_logs, build_provisioning)


def seed(state_dir: pathlib.Path) -> dict[str, list[int]]:
    """Queue the events of :func:`crypto_rig.seed`, save the network and the account.

    Returns the live key numbers of every domain after seeding.
    """
    crypto_rig.seed(state_dir)
    layout = StateLayout(state_dir)
    keys = DataKeys(layout)
    store = FileProvisioningStore(state_dir, keys=keys)
    store.save_credentials(WifiCredentials(SSID, PASSPHRASE, hidden=True))
    store.save_account(ACCOUNT)
    for domain in ROTATION_REQUESTS:
        keys.request_rotation(domain)
    store.forget_remembered()
    return {d: keys.live_numbers(d) for d in ALL_KEY_DOMAINS}


def scan_files(state_dir: pathlib.Path) -> dict[str, Any]:
    """Raw bytes of every file: the SSID or passphrase in clear, and sealed headers per domain."""
    return crypto_rig_stores.scan_files(state_dir, [SSID.encode(), PASSPHRASE.encode()], [])


def read_wifi(state_dir: pathlib.Path) -> dict[str, Any]:
    """The saved network as a new process reads it (its own keys, nothing remembered)."""
    store = FileProvisioningStore(state_dir, keys=DataKeys(StateLayout(state_dir)))
    store.forget_remembered()
    saved = store.load_credentials()
    return {
        "ssid": None if saved is None else saved.ssid,
        "hidden": None if saved is None else saved.hidden,
        "secured": store.saved_secured(),
        "file": store.has_credentials(),
        "account": store.load_account(),
        "binding": StateLayout(state_dir).binding.is_file(),
    }


def restart_and_read(config_path: pathlib.Path, state_dir: pathlib.Path) -> dict[str, Any]:
    config = load(config_path, state_dir)
    composition = compose(config, Mode.DAEMON, builders=BUILDERS)
    try:
        composition.ledger.reapply_withdrawals()
        seen: dict[str, Any] = crypto_rig.read_composition(composition)
        keys = DataKeys(StateLayout(state_dir))
        seen["all_live_keys"] = {d: keys.live_numbers(d) for d in ALL_KEY_DOMAINS}
        seen["rotation_requests"] = keys.rotation_requests()
    finally:
        composition.close()
    seen.update(scan_files(state_dir))
    seen["wifi"] = read_wifi(state_dir)
    return seen


def main(argv: list[str]) -> int:
    config = pathlib.Path(argv[0])
    for state in argv[1:]:
        seen = restart_and_read(config, pathlib.Path(state))
        print(json.dumps(seen, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
