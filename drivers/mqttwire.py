"""MQTT v5 PUBLISH properties for queued events, packed once into bytes.

paho's :class:`~paho.mqtt.properties.Properties` validates every attribute by
scanning its name table and re-packs on every send; on the event path that was
about a third of the agent's CPU per event (profiled with py-spy, issue 12).
Every queued event carries the same shape -- message expiry, content type
(``application/json`` or ``application/cbor`` by ``mqtt.payload_format``, one
:class:`EventProperties` per link) and the user properties ``purpose`` and
``msg_id`` -- so the bytes are built
directly here, in the order paho itself packs them (``tests/core/
test_publish_wire.py`` checks them byte for byte against paho's encoder).
"""

from __future__ import annotations

import struct

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

CONTENT_TYPE = "application/cbor"

# MQTT v5 property identifiers (section 2.2.2.2).
_MESSAGE_EXPIRY = 0x02
_CONTENT_TYPE = 0x03
_USER_PROPERTY = 0x26
MAX_EXPIRY = 0xFFFFFFFF


def _utf8(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return struct.pack(">H", len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


class PackedProperties(Properties):
    """A :class:`Properties` whose wire form is already known.

    paho only ever calls ``pack()`` on the properties of an outgoing PUBLISH
    (first send and any resend on the same connection), so nothing else of
    the base class is set up.
    """

    def __init__(self, packed: bytes) -> None:  # no super().__init__: see the class doc
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["_packed"]
        return packed

    def __str__(self) -> str:
        return f"PackedProperties({len(self.__dict__['_packed'])} bytes)"


_MSG_ID_KEY = bytes([_USER_PROPERTY]) + _utf8("msg_id")
_EXPIRY_ID = bytes([_MESSAGE_EXPIRY])


class EventProperties:
    """Builds the properties of queued events; caches the parts that repeat."""

    def __init__(self, content_type: str = CONTENT_TYPE) -> None:
        self._content_type = bytes([_CONTENT_TYPE]) + _utf8(content_type)
        # Per purpose: content type and the purpose property, which follow the expiry.
        self._middles: dict[str, bytes] = {}

    def _middle(self, purpose: str) -> bytes:
        cached = self._middles.get(purpose)
        if cached is None:
            cached = (
                self._content_type + bytes([_USER_PROPERTY]) + _utf8("purpose") + _utf8(purpose)
            )
            self._middles[purpose] = cached
        return cached

    def pack(self, purpose: str, msg_id: str, expires_in: int) -> bytes:
        """The packed property block (length prefix included)."""
        body = b"".join(
            (
                _EXPIRY_ID,
                max(1, min(expires_in, MAX_EXPIRY)).to_bytes(4, "big"),
                self._middle(purpose),
                _MSG_ID_KEY,
                _utf8(msg_id),
            )
        )
        size = len(body)
        return (bytes((size,)) if size < 0x80 else _varint(size)) + body

    def __call__(self, purpose: str, msg_id: str, expires_in: int) -> PackedProperties:
        return PackedProperties(self.pack(purpose, msg_id, expires_in))
