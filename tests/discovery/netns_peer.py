"""Peers run inside network namespaces by test_wsd_netns.py (``python -m``).

``responder STATE_DIR ADDRESS``: the real discovery service on 3702, joined to
239.255.255.250 on ADDRESS, real 0-500 ms reply delay; prints ``ready``; on
stdin EOF sends Bye, prints the responder's counters as JSON and exits.
``client ADDRESS TIMEOUT``: multicast probe from ADDRESS; prints cameras as JSON.
``listener ADDRESS``: joins the group on ADDRESS, prints ``ready``, then prints
every WS-Discovery message kind and InstanceId as JSON once a Bye arrives.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import pathlib
import select
import socket
import sys
import threading
import time
import urllib.parse

from agent.config import AgentConfig
from agent.discovery import wsd
from agent.discovery.settings import DiscoverySettings
from drivers.discovery.clients import probe_cameras
from drivers.discovery.service import build_service

GROUP = "239.255.255.250"


def settings(address: str) -> DiscoverySettings:
    return dataclasses.replace(
        DiscoverySettings(), interface_address=address, mdns_enabled=False, probe_repeats=2
    )


def responder(state_dir: str, address: str) -> None:
    config = dataclasses.replace(
        AgentConfig(), state_dir=pathlib.Path(state_dir), discovery=settings(address)
    )
    service = build_service(config)
    service.start()
    print("ready", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        select.select([service.fileno()], [], [], 0.02)
        service.tick(time.time())
    stats = service.responder.responder.stats
    service.stop()
    print(json.dumps(dataclasses.asdict(stats)), flush=True)


def _answers(xaddr: str) -> int:
    """The HTTP status a GetSystemDateAndTime at ``xaddr`` gets (0: nothing answered)."""
    url = urllib.parse.urlsplit(xaddr)
    body = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        '<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
        "</s:Body></s:Envelope>"
    )
    connection = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=5)
    try:
        connection.request("POST", url.path, body, {"Content-Type": "application/soap+xml"})
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def client(address: str, timeout: str) -> None:
    cameras = probe_cameras(settings(address), timeout=float(timeout))
    found = [{**c.as_dict(), "xaddr_status": [_answers(x) for x in c.xaddrs]} for c in cameras]
    print(json.dumps(found))


def listener(address: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", 3702))
    membership = socket.inet_aton(GROUP) + socket.inet_aton(address)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.settimeout(10)
    print("ready", flush=True)
    seen: list[dict[str, object]] = []
    while True:
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        message = wsd.decode(data)
        sequence = getattr(message, "app_sequence", None)
        seen.append(
            {
                "kind": type(message).__name__,
                "source": source[0],
                "instance_id": sequence.instance_id if sequence else None,
            }
        )
        if isinstance(message, wsd.Bye):
            break
    print(json.dumps(seen))


if __name__ == "__main__":
    {"responder": responder, "client": client, "listener": listener}[sys.argv[1]](*sys.argv[2:])
