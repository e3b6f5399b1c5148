"""A child process: a real Agent (spine + camera declarations) emitting numbered motion events.

Usage: python -m tests.support.emitter STATE_DIR PORT COUNT IMAGE_BYTES STORAGE_JSON [KIND]
(PORT is unused: the agent runs without a broker link.)
KIND ``motion`` (low value, the default): each event carries an image of IMAGE_BYTES
(sent only with event_snapshots consent), so a small state directory fills quickly.
KIND ``plate``: ``plate.match`` events (high value: never dropped for space), their
``camera`` field padded to IMAGE_BYTES.  Prints ``emitted K accepted A``
every 50 events and ``done {json}`` with the counters at the end, then keeps running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time

from agent.events import Event
from agent.storage_settings import StorageSettings
from drivers.camera import build_camera
from drivers.runtime import Agent
from drivers.vision.feature import build_plates
from tests.support.agent_harness import make_config


def event(kind: str, k: int, size: int) -> Event:
    if kind == "plate":
        fields = {"camera": f"{k:08d}".ljust(size, "."), "score": 1.0, "list": "allow"}
        return Event("plate.match", time.time(), fields=fields, identifiers={"plate": "AB123"})
    fields = {"camera": "cam0", "area": k, "duration": 1.0}
    return Event("motion", time.time(), fields=fields, image=os.urandom(size))


def main() -> None:
    state, port, count = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    image_bytes = int(sys.argv[4])
    storage = StorageSettings(**json.loads(sys.argv[5]))
    # No broker link at all: the events stay queued (and a link retrying an absent
    # broker would only slow the loop down).
    config = dataclasses.replace(make_config(state, port, enabled=False), storage=storage)
    kind = sys.argv[6] if len(sys.argv) > 6 else "motion"
    agent = Agent.build(config, builders=(build_camera, build_plates), environ={})
    agent.start()
    accepted = 0
    for k in range(count):
        accepted += bool(agent.emit(event(kind, k, image_bytes)))
        if k % 10 == 9:
            agent.step()
        if k % 50 == 49:
            print(f"emitted {k + 1} accepted {accepted}", flush=True)
    agent.step()
    # One more pass once the whole tree is due to be measured again, so the counters
    # below reflect every file (the reserve, the audit log), not a walk made before the
    # last events: a fast emitter would otherwise leave drops for the next start.
    time.sleep(storage.check_interval_seconds)
    agent.step()
    guard = agent.outbox.storage
    stats = {**agent.outbox.stats(), **(guard.stats() if guard is not None else {})}
    print(f"done {json.dumps({'accepted': accepted, **stats})}", flush=True)
    while True:
        agent.step()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
