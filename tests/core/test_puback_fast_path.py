"""The link's light PUBACK handling tells the pump exactly what stock paho would (issue 12).

``drivers.mqtt._Client`` reads a property-less PUBACK itself instead of
letting paho build fresh reason and property objects for each one.  Each
packet below goes through both clients; the ``on_publish`` calls (message id,
reason code) and what is left in flight must match.  A real broker round trip
is covered by the event-path tests; this pins the packet forms a broker may
send, including ones the fast path hands back to paho.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.mqtt import _Client

PUBACK = 0x40
PACKETS = [
    b"\x00\x01",  # success, reason and properties left out
    b"\x00\x02\x10",  # "no matching subscribers" (mosquitto's usual answer)
    b"\x00\x03\x87",  # not authorised: a permanent rejection the pump drops
    b"\x00\x04\x97",  # quota exceeded
    b"\x00\x05\x00\x00",  # success with an empty property block
    b"\x00\x06\x83\x05\x1f\x00\x02no",  # a reason string property: paho's own path
    b"\x00\x63",  # a mid nobody sent: ignored
]


def drive(client: paho.Client) -> tuple[list[tuple[int, int]], list[int]]:
    calls: list[tuple[int, int]] = []

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        calls.append((mid, int(reason.value)))

    client.on_publish = on_publish
    for _ in range(6):
        client.publish("t/x", b"payload", qos=1)  # not connected: kept in flight by mid
    for packet in PACKETS:
        client._in_packet = {  # type: ignore[typeddict-item]
            "command": PUBACK, "packet": bytearray(packet), "pos": 0, "to_process": 0,
            "have_remaining": 1, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": len(packet),
        }
        client._handle_pubackcomp("PUBACK")
    return calls, sorted(client._out_messages)


@pytest.mark.parametrize("logging_on", [False, True])
def test_each_puback_form_is_handled_as_stock_paho_handles_it(logging_on: bool) -> None:
    stock = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    ours = _Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if logging_on:  # paho's own path throughout, log lines and all
        for client in (stock, ours):
            client.on_log = lambda *args: None
    expected = drive(stock)
    assert expected[0] == [(1, 0), (2, 0x10), (3, 0x87), (4, 0x97), (5, 0), (6, 0x83)]
    _Client._REASONS.clear()
    assert drive(ours) == expected
    # The light path did the work, not paho's (which never fills the shared codes).
    assert set(_Client._REASONS) == (set() if logging_on else {0, 0x10, 0x87, 0x97})
