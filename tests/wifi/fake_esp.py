"""The module side of ESP-AT on the master end of a real pty pair.

Answers like ESP-AT v2/v3 firmware: echo until ``ATE0``, ``+CWLAP:(...)`` rows,
``WIFI CONNECTED``/``WIFI GOT IP``/``OK`` or ``+CWJAP:<code>``/``FAIL`` for a
join, ``busy p...`` while "busy".  Like the real module, a join writes the
network to flash whenever ``AT+SYSSTORE`` is 1, successful or not.
"""

from __future__ import annotations

import os
import re
import select
import threading

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


class FakeEspModule:
    def __init__(self, networks: dict[str, str | None]) -> None:
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave
        self.networks = networks
        self.scan_lines: list[bytes] = []
        self.echo = True
        self.store = True
        self.flash: tuple[str, str] | None = None
        self.joined: str | None = None
        self.joins: list[tuple[str, str]] = []
        self.received: list[bytes] = []
        self.busy_replies = 0
        self.noise = b""
        self.truncate_reply_to: bytes | None = None
        self.grant_ip = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self._slave)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except OSError:
            self._stop.set()

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buffer += os.read(self.master, 4096)
            except OSError:
                return
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                self.received.append(line)
                if self.echo:
                    self._write(line + b"\r\n")
                self._answer(line)

    def _answer(self, line: bytes) -> None:
        if self.truncate_reply_to is not None and line.startswith(self.truncate_reply_to):
            self._write(b'+CWLAP:(3,"half')
            return
        if self.busy_replies and line.startswith(b"AT+CWJAP="):
            self.busy_replies -= 1
            self._write(b"busy p...\r\n")
            return
        self._write(self.noise)
        text = line.decode("utf-8", "surrogateescape")
        if text == "ATE0":
            self.echo = False
            self._write(b"\r\nOK\r\n")
        elif text.startswith("AT+SYSSTORE="):
            self.store = text.endswith("1")
            self._write(b"\r\nOK\r\n")
        elif text == "AT+CWLAP":
            self._write(b"".join(row + b"\r\n" for row in self.scan_lines) + b"\r\nOK\r\n")
        elif text.startswith("AT+CWJAP="):
            self._join([_unescape(s) for s in _STRING.findall(text)])
        elif text == "AT+CWJAP?":
            if self.joined is None:
                self._write(b"No AP\r\n\r\nOK\r\n")
            else:
                ssid = self.joined.encode()
                self._write(
                    b'+CWJAP:"' + ssid + b'","02:00:00:00:01:00",6,-50,0,1,3,0,1\r\n\r\nOK\r\n'
                )
        elif text == "AT+CIPSTA?":
            ip = b"192.168.4.7" if self.joined is not None and self.grant_ip else b"0.0.0.0"
            self._write(
                b'+CIPSTA:ip:"' + ip + b'"\r\n+CIPSTA:netmask:"255.255.255.0"\r\n\r\nOK\r\n'
            )
        elif text == "AT+CWQAP":
            self.joined = None
            self._write(b"\r\nOK\r\nWIFI DISCONNECT\r\n")
        else:
            self._write(b"\r\nERROR\r\n")

    def _join(self, strings: list[str]) -> None:
        if len(strings) != 2:
            self._write(b"\r\nERROR\r\n")
            return
        ssid, password = strings
        self.joins.append((ssid, password))
        if self.store:
            self.flash = (ssid, password)
        if ssid not in self.networks:
            self._write(b"+CWJAP:3\r\n\r\nFAIL\r\n")
        elif (self.networks[ssid] or "") != password:
            self._write(b"+CWJAP:2\r\n\r\nFAIL\r\n")
        else:
            self.joined = ssid
            self._write(b"WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n")
