"""WS-Discovery peers run inside a network namespace by test_wsd_attacks.py (``python -m``).

``flood ADDRESS SECONDS RATE``: multicast unique Probes to 239.255.255.250:3702
from ADDRESS at RATE per second for SECONDS, print ``flooded``, then on a line
from stdin print, as JSON, what was sent and every reply that reached the socket.
``tool ADDRESS TIMEOUT``: a camera tool; a fresh multicast Probe every 0.5 s from
ADDRESS until one is answered; prints the seconds it took (exit 1 on timeout).
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid

from agent.discovery import wsd
from agent.discovery.wsd import NETWORK_VIDEO_TRANSMITTER, Probe, WsdVersion

GROUP = ("239.255.255.250", 3702)


def _socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((address, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    return sock


def _probe() -> tuple[str, bytes]:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    probe = Probe(WsdVersion.V2005_04, message_id, (NETWORK_VIDEO_TRANSMITTER,))
    return message_id, wsd.encode(probe)


def flood(address: str, seconds: str, rate: str) -> None:
    sock = _socket(address)
    started = time.monotonic()
    sent = sent_bytes = 0
    while (elapsed := time.monotonic() - started) < float(seconds):
        while sent < elapsed * float(rate):
            data = _probe()[1]
            sock.sendto(data, GROUP)
            sent, sent_bytes = sent + 1, sent_bytes + len(data)
        time.sleep(0.005)
    print("flooded", flush=True)
    sys.stdin.readline()
    sock.setblocking(False)
    replies = []
    try:
        while True:
            replies.append(len(sock.recv(65535)))
    except BlockingIOError:
        pass
    print(json.dumps({"sent": sent, "sent_bytes": sent_bytes,
                      "seconds": time.monotonic() - started, "replies": replies}), flush=True)


def tool(address: str, timeout: str) -> None:
    sock = _socket(address)
    started = time.monotonic()
    sent: set[str] = set()
    while time.monotonic() - started < float(timeout):
        message_id, data = _probe()
        sent.add(message_id)
        sock.sendto(data, GROUP)
        sock.settimeout(0.5)
        try:
            while True:
                reply = wsd.decode(sock.recv(65535))
                if isinstance(reply, wsd.ProbeMatches) and reply.relates_to in sent:
                    print(f"{time.monotonic() - started:.3f}", flush=True)
                    return
        except TimeoutError:
            continue
    sys.exit(1)


if __name__ == "__main__":
    {"flood": flood, "tool": tool}[sys.argv[1]](*sys.argv[2:])
