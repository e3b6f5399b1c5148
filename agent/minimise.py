"""Data minimisation: what of an event may leave the device, and in what form.

For each event the minimiser keeps only the fields its schema allows for its
purpose, replaces identifiers (person, plate, device) with HMAC-SHA256
pseudonyms under a per-purpose key, keeps an image only when the schema allows
one AND ``event_snapshots`` is consented, coarsens the timestamp, and encodes
the result as CBOR under a size cap.  An event whose purpose is not consented
is refused outright (``None``): it is never queued, so it can never leak.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import pathlib
from collections.abc import Callable, Mapping

from agent import atomicfile, cbor
from agent.errors import DecodeError, TooLargeError
from agent.eventbody import EventBody, encode_body
from agent.events import SCHEMA_VERSION, Event, SchemaCatalogue
from agent.layout import StateLayout
from agent.purposes import Purpose
from agent.randompool import random_bytes

PRECISION_SECONDS = {"second": 1, "minute": 60, "hour": 3600}


def load_or_create_secret(state_dir: pathlib.Path) -> bytes:
    """The device's pseudonym root secret: 32 random bytes, 0600, written atomically."""
    return atomicfile.load_or_create_secret(StateLayout(state_dir).pseudonym_key)


def uuid4_text() -> str:
    """``str(uuid.uuid4())`` without building a UUID object (a third of the cost)."""
    h = random_bytes(16).hex()
    # Version 4 in the 13th hex digit, the RFC 4122 variant (10xx) in the 17th.
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


class Pseudonymiser:
    """Stable per-purpose pseudonyms; a new key generation after each withdrawal."""

    def __init__(self, secret: bytes, generation_of: Callable[[Purpose], int]) -> None:
        self._secret = secret
        self._generation_of = generation_of
        self._keys: dict[tuple[Purpose, int], bytes] = {}
        # Only the device's own pseudonym is memoised (it rides on every event);
        # people's and plates' are not, so an erased identity leaves no trace here.
        self._device: dict[tuple[bytes, str], str] = {}

    def key(self, purpose: Purpose) -> bytes:
        generation = self._generation_of(purpose)
        cached = self._keys.get((purpose, generation))
        if cached is None:
            label = f"edge-agent/pseudonym/{purpose.value}/{generation}".encode()
            cached = hmac.new(self._secret, label, hashlib.sha256).digest()
            self._keys[(purpose, generation)] = cached
        return cached

    def pseudonym(self, purpose: Purpose, kind: str, value: str) -> str:
        key = self.key(purpose)
        if kind != "device":
            return self._derive(key, kind, value)
        cached = self._device.get((key, value))
        if cached is None:
            cached = self._device[(key, value)] = self._derive(key, kind, value)
        return cached

    @staticmethod
    def _derive(key: bytes, kind: str, value: str) -> str:
        mac = hmac.digest(key, f"{kind}\x00{value}".encode(), "sha256")  # one-shot, in C
        # 128 bits: collision-free for any gallery, short on the wire.
        return base64.b32encode(mac[:16]).decode().rstrip("=").lower()


# Not frozen: a frozen dataclass's __init__ costs five times a plain one's, once per
# event (issue 12).  Nothing changes a message once made.
@dataclasses.dataclass(slots=True)
class OutgoingMessage:
    msg_id: str
    event_type: str
    purpose: Purpose
    payload: bytes
    created_at: float
    expiry_seconds: int | None
    has_image: bool = False
    # The map ``payload`` encodes, kept so the outbox can add ``seq`` with one encode
    # instead of a decode and a re-encode (None: decode ``payload``).
    body: Mapping[str, object] | None = dataclasses.field(default=None, compare=False)
    # ``payload`` in pieces, so the outbox splices ``seq`` in (and the image out) without
    # encoding again (None: use ``body`` or ``payload``); see agent.eventbody.
    encoded: EventBody | None = dataclasses.field(default=None, compare=False)


def strip_image(payload: bytes) -> bytes | None:
    """``payload`` re-encoded without its snapshot, or None if it carries none.

    Used when ``event_snapshots`` is withdrawn after an event was minimised:
    the event itself stays (its own purpose is still consented), the image goes.
    """
    try:
        body = cbor.loads_untrusted(payload, max_bytes=len(payload))
    except DecodeError:
        return None
    if not isinstance(body, dict) or "img" not in body:
        return None
    del body["img"]
    return cbor.dumps(body)


class Minimiser:
    def __init__(
        self,
        *,
        device_id: str,
        schemas: SchemaCatalogue,
        is_granted: Callable[[Purpose], bool],
        pseudonymiser: Pseudonymiser,
        timestamp_precision: str = "second",
        max_event_bytes: int = 256 * 1024,
        new_id: Callable[[], str] = uuid4_text,
    ) -> None:
        self.device_id = device_id
        self.schemas = schemas
        self.is_granted = is_granted
        self.pseudonymiser = pseudonymiser
        self.precision = PRECISION_SECONDS[timestamp_precision]
        self.max_event_bytes = max_event_bytes
        self.new_id = new_id

    def minimise(self, event: Event) -> OutgoingMessage | None:
        schema = self.schemas.get(event.type)
        purpose = schema.purpose
        if not self.is_granted(purpose):
            return None
        allowed = schema.fields
        fields = {k: v for k, v in event.fields.items() if k in allowed}
        ids = {
            kind: self.pseudonymiser.pseudonym(purpose, kind, value)
            for kind, value in event.identifiers.items()
            if kind in schema.identifiers
        }
        ts = int(event.occurred_at // self.precision * self.precision)
        msg_id = self.new_id()
        # The device itself is an identifier of its owner: pseudonymised too.
        dev = (
            self.pseudonymiser.pseudonym(purpose, "device", self.device_id)
            if purpose.needs_consent
            else None
        )
        image = (
            bytes(event.image)
            if event.image is not None
            and schema.may_carry_image
            and self.is_granted(Purpose.EVENT_SNAPSHOTS)
            else None
        )
        try:
            encoded = encode_body(
                fields=fields, version=SCHEMA_VERSION, msg_id=msg_id, ts=ts, dev=dev, ids=ids,
                image=image, event_type=event.type, purpose=purpose.value,
            )
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"event {event.type} has an unencodable field: {exc}") from exc
        if encoded is None:
            return self._slow(
                event, purpose, fields=fields, ids=ids, ts=ts, msg_id=msg_id, dev=dev, image=image
            )
        payload = encoded.cbor()
        if len(payload) > self.max_event_bytes and image is not None:
            # Better the event without its picture than no event.
            encoded = encode_body(
                fields=fields, version=SCHEMA_VERSION, msg_id=msg_id, ts=ts, dev=dev, ids=ids,
                image=None, event_type=event.type, purpose=purpose.value, image_dropped=True,
            )
            assert encoded is not None  # the same fields encoded a moment ago
            payload = encoded.cbor()
        self._check_size(event, payload)
        return OutgoingMessage(
            msg_id,
            event.type,
            purpose,
            payload,
            event.occurred_at,
            event.expiry_seconds,
            has_image=encoded.image is not None,
            encoded=encoded,
        )

    def _check_size(self, event: Event, payload: bytes) -> None:
        if len(payload) > self.max_event_bytes:
            raise TooLargeError(
                f"event {event.type} is {len(payload)} bytes, cap {self.max_event_bytes}"
            )

    def _slow(
        self,
        event: Event,
        purpose: Purpose,
        *,
        fields: dict[str, object],
        ids: dict[str, str],
        ts: int,
        msg_id: str,
        dev: str | None,
        image: bytes | None,
    ) -> OutgoingMessage:
        """Fields that are not plain scalars (lists, maps): the whole map through cbor2."""
        body: dict[str, object] = {
            "v": SCHEMA_VERSION,
            "type": event.type,
            "purpose": purpose.value,
            "ts": ts,
            "f": fields,
            "id": msg_id,
        }
        if ids:
            body["ids"] = ids
        if dev is not None:
            body["dev"] = dev
        if image is not None:
            body["img"] = image
        try:
            payload = cbor.dumps(body)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"event {event.type} has an unencodable field: {exc}") from exc
        if len(payload) > self.max_event_bytes and "img" in body:
            # Better the event without its picture than no event.
            del body["img"]
            body["img_dropped"] = True
            payload = cbor.dumps(body)
        self._check_size(event, payload)
        return OutgoingMessage(
            msg_id,
            event.type,
            purpose,
            payload,
            event.occurred_at,
            event.expiry_seconds,
            has_image="img" in body,
            body=body,
        )
