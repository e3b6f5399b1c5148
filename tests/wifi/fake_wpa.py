"""A wpa_supplicant stand-in speaking the real control-interface protocol.

It binds a real UNIX datagram socket, answers each request datagram to the
sender's bound path (as ctrl_iface_unix.c does), keeps ATTACHed monitors and
sends them ``<N>CTRL-EVENT-...`` datagrams.  SET_NETWORK validates values with
wpa_supplicant's rules (quoted or hex SSID; quoted 8..63 or 64-hex psk), so a
quoting bug in the client shows up as FAIL just as on a device.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time

from agent.provisioning.wpa_ctrl import printf_encode

SCAN_HEADER = "bssid / frequency / signal level / flags / ssid\n"


def _parse_string(value: str) -> bytes | None:
    if value.startswith('"'):
        end = value.rfind('"')
        return value[1:end].encode() if end > 0 else None
    if len(value) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", value):
        return None
    return bytes.fromhex(value)


def _valid(name: str, value: str) -> bool:
    if name == "ssid":
        raw = _parse_string(value)
        return raw is not None and 1 <= len(raw) <= 32
    if name == "psk":
        if value.startswith('"'):
            raw = _parse_string(value)
            return raw is not None and 8 <= len(raw) <= 63
        return re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None
    return name in ("key_mgmt", "scan_ssid", "ieee80211w", "priority") and bool(value)


@dataclasses.dataclass
class FakeNetwork:
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    enabled: bool = False


class FakeWpaSupplicant:
    """``outcome``: connect | wrong_key | not_found | no_address | silent."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.commands: list[str] = []
        self.monitors: set[str] = set()
        self.networks: dict[int, FakeNetwork] = {}
        self.next_id = 0
        self.outcome = "connect"
        self.supports_sae = True
        self.address_delay = 0.0
        self.scan_rows: list[str] = []
        self.raw_scan_reply: bytes | None = None
        self.extra_events: list[bytes] = []
        self.saved: list[dict[int, dict[str, str]]] = []
        self.state = {"wpa_state": "DISCONNECTED"}
        self._connected_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _send_event(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode()
        for monitor in list(self.monitors):
            try:
                self.sock.sendto(data, monitor)
            except OSError:
                self.monitors.discard(monitor)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            command = data.decode("utf-8", "surrogateescape")
            self.commands.append(command)
            reply, after = self._handle(command, sender)
            try:
                self.sock.sendto(reply.encode("utf-8", "surrogateescape"), sender)
            except OSError:
                continue  # the client gave up and removed its socket, as real clients do
            if after is not None:
                after()

    def _status(self) -> str:
        fields = dict(self.state)
        if (
            self._connected_at is not None
            and self.outcome == "connect"
            and time.monotonic() >= self._connected_at + self.address_delay
        ):
            fields["ip_address"] = "10.0.0.42"
        return "".join(f"{k}={v}\n" for k, v in fields.items())

    def _handle(self, command: str, sender: str):  # type: ignore[no-untyped-def]
        verb, _, rest = command.partition(" ")
        if verb == "PING":
            return "PONG\n", None
        if verb == "ATTACH":
            self.monitors.add(sender)
            return "OK\n", None
        if verb == "DETACH":
            self.monitors.discard(sender)
            return "OK\n", None
        if verb == "SCAN":
            return "OK\n", lambda: self._send_event("<2>CTRL-EVENT-SCAN-RESULTS ")
        if verb == "SCAN_RESULTS":
            if self.raw_scan_reply is not None:
                return self.raw_scan_reply.decode("utf-8", "surrogateescape"), None
            return SCAN_HEADER + "".join(row + "\n" for row in self.scan_rows), None
        if verb == "STATUS":
            return self._status(), None
        if verb == "LIST_NETWORKS":
            rows = "".join(
                f"{nid}\t{net.values.get('ssid', '')}\tany\t{'' if net.enabled else '[DISABLED]'}\n"
                for nid, net in self.networks.items()
            )
            return "network id / ssid / bssid / flags\n" + rows, None
        if verb == "ADD_NETWORK":
            nid = self.next_id
            self.next_id += 1
            self.networks[nid] = FakeNetwork()
            return f"{nid}\n", None
        if verb == "SET_NETWORK":
            nid_text, _, tail = rest.partition(" ")
            name, _, value = tail.partition(" ")
            network = self.networks.get(int(nid_text)) if nid_text.isdigit() else None
            sae_refused = not self.supports_sae and "SAE" in value and name == "key_mgmt"
            if network is None or not _valid(name, value) or sae_refused:
                return "FAIL\n", None
            network.values[name] = value
            return "OK\n", None
        if verb == "GET_NETWORK":
            nid_text, _, name = rest.partition(" ")
            network = self.networks.get(int(nid_text))
            if network is None or name not in network.values:
                return "FAIL\n", None
            return ("*" if name == "psk" else network.values[name]), None
        if verb in ("ENABLE_NETWORK", "REMOVE_NETWORK"):
            if not rest.isdigit() or int(rest) not in self.networks:
                return "FAIL\n", None
            if verb == "REMOVE_NETWORK":
                del self.networks[int(rest)]
            else:
                self.networks[int(rest)].enabled = True
            return "OK\n", None
        if verb == "SELECT_NETWORK":
            if not rest.isdigit() or int(rest) not in self.networks:
                return "FAIL\n", None
            for nid, network in self.networks.items():
                network.enabled = nid == int(rest)
            return "OK\n", lambda: self._play_outcome(int(rest))
        if verb == "SAVE_CONFIG":
            self.saved.append({nid: dict(n.values) for nid, n in self.networks.items()})
            return "OK\n", None
        return "UNKNOWN COMMAND\n", None

    def _play_outcome(self, nid: int) -> None:
        for event in self.extra_events:
            self._send_event(event)
        ssid_value = self.networks[nid].values.get("ssid", '""')
        raw = _parse_string(ssid_value) or b""
        ssid = printf_encode(raw)
        self._send_event("<3>CTRL-EVENT-SCAN-RESULTS ")
        if self.outcome in ("connect", "no_address"):
            self.state = {
                "bssid": "02:00:00:00:01:00",
                "freq": "2437",
                "ssid": ssid,
                "id": str(nid),
                "mode": "station",
                "key_mgmt": "WPA2-PSK",
                "wpa_state": "COMPLETED",
                "address": "02:00:00:00:00:01",
            }
            self._connected_at = time.monotonic()
            self._send_event(
                "<3>CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 "
                f"completed [id={nid} id_str=]"
            )
        elif self.outcome == "wrong_key":
            self._send_event(
                f'<3>CTRL-EVENT-SSID-TEMP-DISABLED id={nid} ssid="{ssid}" auth_failures=1 '
                "duration=10 reason=WRONG_KEY"
            )
        elif self.outcome == "not_found":
            self._send_event("<3>CTRL-EVENT-NETWORK-NOT-FOUND ")
