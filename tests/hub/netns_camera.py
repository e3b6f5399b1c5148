"""A camera on the LAN for test_adopt_netns.py, run inside its namespace (``python -m``).

``python -m tests.hub.netns_camera WORKDIR ADDRESS MODEL USER:PASSWORD``: the
real RTSP server (rtsp-server-perl fed by ffmpeg with a clip where something
always moves) listening on ADDRESS, and the agent's own discovery service --
WS-Discovery responder (Hello, answers, Bye) and ONVIF device service -- with
its GetStreamUri pointing at that stream and the ONVIF user from a 0600 file.
Prints ``ready`` once all of it listens; on stdin EOF sends Bye, stops and
prints the responder's counters as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import select
import sys
import threading
import time

from agent.config import AgentConfig, DeviceSettings
from agent.discovery.settings import DiscoverySettings
from agent.keystore import DataKeys
from agent.layout import StateLayout
from drivers.discovery.onvif_store import OnvifCredentialStore
from drivers.discovery.service import build_service
from tests.hub.rtsp import RtspServer, write_clip


def main(workdir: str, address: str, model: str, user: str) -> None:
    root = pathlib.Path(workdir)
    (root / "state").mkdir(parents=True, exist_ok=True)
    clip = root / "lobby.avi"
    write_clip(clip, shade=230)
    rtsp = RtspServer(root, address=address)
    try:
        url = rtsp.publish(clip, "lobby")
        users = root / "onvif-user"
        users.write_text(f"{user}\n")
        users.chmod(0o600)
        config = dataclasses.replace(
            AgentConfig(),
            state_dir=root / "state",
            device=DeviceSettings(serial_number="EA-LOBBY-CAM-7", model=model),
            discovery=dataclasses.replace(
                DiscoverySettings(),
                interface_address=address,
                mdns_enabled=False,
                reply_delay_max_ms=0,
                onvif_stream_uri=url,
                onvif_credentials_file=str(users),
            ),
        )
        layout = StateLayout(config.state_dir)
        store = OnvifCredentialStore(layout, DataKeys(layout), users)
        service = build_service(config, store=store)
        service.start()
        print("ready", flush=True)
        stop = threading.Event()

        def until_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=until_eof, daemon=True).start()
        while not stop.is_set():
            select.select([service.fileno()], [], [], 0.02)
            service.tick(time.time())
        responder = service.responder.responder if service.responder else None
        service.stop()  # Bye
        print(json.dumps(dataclasses.asdict(responder.stats) if responder else {}), flush=True)
    finally:
        rtsp.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
