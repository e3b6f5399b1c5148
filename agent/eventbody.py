"""An event's canonical CBOR, encoded once and cut where ``img`` and ``seq`` go.

The minimiser encodes each event; the outbox then needs the same map without
its image (images are sealed apart) and with ``seq`` added, and the link may
need it with the image back, or as JSON.  Decoding and re-encoding for each of
those was the largest CPU cost of the event path (py-spy, issue 12): cbor2's
canonical mode spends about a microsecond per map key sorting.  Here the map
is encoded once, in three pieces, and the variants are spliced from them:

* canonical (length-first) key order puts ``f, v, id, ts, dev, ids`` first,
  then ``img``, then ``seq``, then ``type, purpose, img_dropped``: so
  ``header | head | [img entry] | [seq entry] | tail`` is the canonical map
  with or without either, byte for byte what :func:`agent.cbor.dumps` makes;
* the pieces are written by cbor2's plain mode (insertion order) from maps
  already in canonical order, with floats in their shortest exact width
  (cbor2's canonical float rule), so no map is sorted by cbor2;
* JSON is made from the same ordered maps, which is what
  :func:`agent.jsonform.cbor_to_json` makes of the bytes (keys in the CBOR
  order, the same values).

Only events whose fields are plain scalars (text, 64-bit integers, floats,
booleans, null, bytes) under text keys take this path; any other shape is
encoded as before, whole (``None`` from :func:`encode_body`).
``tests/core/test_event_body.py`` checks both forms against the slow path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from agent import jsonform

IMG_KEY = b"\x63img"
SEQ_KEY = b"\x63seq"
_F_KEY = b"\x61f"
_INT_LIMIT = 2**64
# Encoded field names, which repeat from event to event (bounded: names come from schemas).
_KEY_CACHE: dict[str, bytes] = {}
_KEY_CACHE_MAX = 4096


def map_header(count: int) -> bytes:
    """The CBOR header of a map of ``count`` entries (major type 5)."""
    if count < 24:
        return bytes((0xA0 + count,))
    if count < 0x100:
        return bytes((0xB8, count))
    if count < 0x10000:
        return b"\xb9" + count.to_bytes(2, "big")
    return b"\xba" + count.to_bytes(4, "big")


def ordered(mapping: Mapping[Any, Any]) -> dict[str, Any] | None:
    """``mapping`` with its keys in canonical CBOR order, or None unless every key is text."""
    keys = list(mapping)
    if any(type(k) is not str for k in keys):
        return None
    keys.sort()
    # A text key encodes as its length then its UTF-8 bytes: for ASCII, (length,
    # text) is the canonical (encoded length, bytes) order, via a stable sort by
    # length over the sorted list; UTF-8 keeps code-point order, not lengths.
    if "".join(keys).isascii():
        keys.sort(key=len)
    else:
        keys.sort(key=lambda k: len(k.encode("utf-8", "surrogatepass")))
    return {k: mapping[k] for k in keys}


def _key(name: str) -> bytes:
    cached = _KEY_CACHE.get(name)
    if cached is None:
        cached = cbor2.dumps(name)
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[name] = cached
    return cached


def scalar_entries(mapping: dict[str, Any]) -> bytes | None:
    """The canonical entries (no header) of an ordered map of scalars, else None."""
    floats = False
    for value in mapping.values():
        kind = type(value)
        if kind is float:
            floats = True
        elif kind is int:
            if not -_INT_LIMIT <= value < _INT_LIMIT:
                return None
        elif not (kind is str or kind is bool or kind is bytes or value is None):
            return None
    if not floats:
        return _plain_entries(mapping)
    # Runs of other entries in plain mode; each float alone in canonical mode, which
    # writes it at its shortest exact width, as a canonical map would.
    parts: list[bytes] = []
    run: dict[str, Any] = {}
    for key, value in mapping.items():
        if type(value) is float:
            if run:
                parts.append(_plain_entries(run))
                run = {}
            parts.append(_key(key))
            parts.append(cbor2.dumps(value, canonical=True))
        else:
            run[key] = value
    if run:
        parts.append(_plain_entries(run))
    return b"".join(parts)


def _plain_entries(mapping: dict[str, Any]) -> bytes:
    # Plain mode keeps the (canonical) insertion order; its own header is dropped.
    return cbor2.dumps(mapping)[len(map_header(len(mapping))) :]


class _Tail:
    """``type``, ``purpose`` (and ``img_dropped``): the same for every event of a type."""

    __slots__ = ("entries", "map")

    def __init__(self, event_type: str, purpose: str, image_dropped: bool) -> None:
        self.map: dict[str, Any] = {"type": event_type, "purpose": purpose}
        if image_dropped:
            self.map["img_dropped"] = True
        self.entries = _plain_entries(self.map)


# Per (type, purpose, image dropped): bounded, the event types come from schemas.
_TAILS: dict[tuple[str, str, bool], _Tail] = {}
_TAILS_MAX = 1024


def _tail(event_type: str, purpose: str, image_dropped: bool) -> _Tail:
    key = (event_type, purpose, image_dropped)
    tail = _TAILS.get(key)
    if tail is None:
        tail = _Tail(event_type, purpose, image_dropped)
        if len(_TAILS) < _TAILS_MAX:
            _TAILS[key] = tail
    return tail


class EventBody:
    """The pieces of one event's canonical map (see the module doc)."""

    __slots__ = ("_image_entry", "count", "head", "head_map", "image", "tail", "tail_map")

    def __init__(
        self, head_map: dict[str, Any], head: bytes, image: bytes | None, tail: _Tail
    ) -> None:
        self.head_map = head_map
        self.head = head
        self.image = image
        self.tail_map = tail.map  # shared between events: read, never changed
        self.tail = tail.entries
        self.count = len(head_map) + len(tail.map)
        self._image_entry: bytes | None = None

    def cbor(self, seq: int | None = None, *, with_image: bool = True) -> bytes:
        """The canonical CBOR map, with ``seq`` if given, with ``img`` if asked and present."""
        parts = [b"", self.head]
        count = self.count
        if with_image and self.image is not None:
            if self._image_entry is None:
                self._image_entry = IMG_KEY + cbor2.dumps(self.image)
            parts.append(self._image_entry)
            count += 1
        if seq is not None:
            parts.append(SEQ_KEY)
            parts.append(cbor2.dumps(seq))
            count += 1
        parts.append(self.tail)
        parts[0] = map_header(count)
        return b"".join(parts)

    def json(self, seq: int | None = None, *, with_image: bool = True) -> bytes:
        """:func:`agent.jsonform.cbor_to_json` of :meth:`cbor` with the same arguments."""
        body = dict(self.head_map)
        if with_image and self.image is not None:
            body["img"] = self.image
        if seq is not None:
            body["seq"] = seq
        body.update(self.tail_map)
        return jsonform.dumps(body)


def encode_body(
    *,
    fields: Mapping[str, object],
    version: int,
    msg_id: str,
    ts: int,
    dev: str | None,
    ids: Mapping[str, str],
    image: bytes | None,
    event_type: str,
    purpose: str,
    image_dropped: bool = False,
) -> EventBody | None:
    """The pieces of the event map the minimiser builds; None if a field is not a scalar."""
    f = ordered(fields)
    if f is None:
        return None
    entries = scalar_entries(f)
    if entries is None:
        return None
    rest: dict[str, Any] = {"v": version, "id": msg_id, "ts": ts}
    if dev is not None:
        rest["dev"] = dev
    if ids:
        sorted_ids = ordered(ids)
        if sorted_ids is None or any(type(v) is not str for v in sorted_ids.values()):
            return None
        rest["ids"] = sorted_ids
    if type(ts) is not int or not -_INT_LIMIT <= ts < _INT_LIMIT:
        return None
    # f sorts first of all keys (length 1, before v); the rest of the head follows.
    head = _F_KEY + map_header(len(f)) + entries + _plain_entries(rest)
    return EventBody({"f": f, **rest}, head, image, _tail(event_type, purpose, image_dropped))
