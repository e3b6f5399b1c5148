"""paho-mqtt 2.x glue: one MQTT v5 connection, its LWT, commands and acks.

A new paho client is made for every connection attempt, so no message can sit
in a hidden paho queue across a disconnect (it might belong to a purpose that
was withdrawn meanwhile); the outbox is the only queue.  Reconnects back off
exponentially with jitter.  paho calls back from its own thread: callbacks
only enqueue and wake the main loop, except that a PUBACK lets the pump send
the next message it read ahead (:meth:`agent.pump.Pump.refill`), so the
window stays full while the main loop commits.

Events are stored as CBOR; with ``mqtt.payload_format = "json"`` (the
default) each is converted as it is published (:func:`agent.jsonform.cbor_to_json`)
and carries content type ``application/json``.
"""

from __future__ import annotations

import collections
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttSettings, PayloadFormat, TlsMode
from agent.errors import ConfigError, ConnectionLostError
from agent.jsonform import CBOR_CONTENT_TYPE, JSON_CONTENT_TYPE, cbor_to_json
from agent.pump import Pump
from agent.topics import Topics
from drivers.mqttwire import EventProperties
from drivers.wakeup import Wakeup

log = logging.getLogger(__name__)

CONTENT_TYPE = CBOR_CONTENT_TYPE
ONLINE = b"online"
# A reply may carry a log bundle or a sealed export: a broker holding it for a requester
# that went away keeps it at most this long (MQTT v5 message expiry), not until it returns.
REPLY_EXPIRY_SECONDS = 300
OFFLINE = b"offline"


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class _Client(paho.Client):
    """paho's client with a lighter PUBACK: the event path's most frequent packet.

    paho decodes each PUBACK into a fresh ReasonCode (which copies its table of
    every reason name) and a fresh Properties, about a third of the agent's CPU
    per event (py-spy, issue 12).  A PUBACK with no properties -- what brokers
    send -- is read here and handed to paho's own completion (``_do_on_publish``)
    with one shared, never-changed ReasonCode per code and one empty Properties;
    anything else (properties, logging on, another packet) takes paho's path.
    ``tests/core/test_puback_fast_path.py`` checks both against stock paho.
    """

    _REASONS: dict[int, Any] = {}
    _NO_PROPERTIES: Any = None

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        if (
            cmd != "PUBACK"
            or self._protocol != paho.MQTTv5
            or not 2 <= size <= 4
            or (size == 4 and packet[3] != 0)  # properties follow: paho reads them
            or self.on_log is not None
            or self._logger is not None
        ):
            return super()._handle_pubackcomp(cmd)
        code = packet[2] if size > 2 else 0
        reason = _Client._REASONS.get(code)
        if reason is None:
            try:
                reason = ReasonCode(PacketTypes.PUBACK, identifier=code)
            except (KeyError, ValueError):
                return super()._handle_pubackcomp(cmd)
            _Client._REASONS[code] = reason
        if _Client._NO_PROPERTIES is None:
            _Client._NO_PROPERTIES = _properties(PacketTypes.PUBACK)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(
                    mid, reason, _Client._NO_PROPERTIES
                )
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class IncomingCommand:
    __slots__ = (
        "content_type",
        "correlation",
        "foreign_response_topic",
        "name",
        "payload",
        "response_topic",
    )

    def __init__(
        self,
        name: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        *,
        foreign_response_topic: bool = False,
        content_type: str | None = None,
    ) -> None:
        self.name = name
        self.payload = payload
        self.response_topic = response_topic
        self.correlation = correlation
        # The MQTT v5 ContentType, if the requester set one (v3.1.1 clients cannot).
        self.content_type = content_type
        # The requester named a reply topic outside this device's namespace:
        # the command is refused (answered on the default reply topic).
        self.foreign_response_topic = foreign_response_topic


class Backoff:
    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.current = minimum
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = self.current * (0.5 + self.rng.random() / 2)
        self.current = min(self.maximum, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.minimum


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        pump: Pump,
        wake: Wakeup,
        *,
        client_id: str,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.pump = pump
        self.wake = wake
        self.client_id = client_id
        self.commands: collections.deque[IncomingCommand] = collections.deque(maxlen=256)
        self.backoff = Backoff(settings.reconnect_min_seconds, settings.reconnect_max_seconds)
        self._client: paho.Client | None = None
        self._connected = False
        self._session = 0
        self._next_attempt = 0.0
        self._dead = False
        # The current client's CONNACK was a refusal (its reason is last_error).
        self._refused = False
        self._password = self._read_password()
        self.connects = 0
        self.last_error = ""
        # Per purpose, the longest the broker may hold an event: what the device may keep
        # it (agent.rights.retention.expiry_caps); set by the composition root.
        self.expiry_caps: dict[str, int] = {}
        self.json = settings.payload_format is PayloadFormat.JSON
        self._event_properties = EventProperties(
            JSON_CONTENT_TYPE if self.json else CBOR_CONTENT_TYPE
        )

    # --- Transport protocol used by the pump ---------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def publish_queued(
        self,
        topic: str,
        payload: bytes,
        purpose: str,
        msg_id: str,
        expires_in: int,
        *,
        json: Callable[[], bytes] | None = None,
    ) -> int:
        client = self._client
        if client is None or not self._connected:
            raise ConnectionLostError("not connected")
        cap = self.expiry_caps.get(purpose)
        if cap is not None and cap < expires_in:
            expires_in = max(1, cap)
        # Pre-packed: paho's own Properties cost a third of the CPU per event.
        props = self._event_properties(purpose, msg_id, expires_in)
        if self.json:  # the outbox keeps CBOR; JSON is made on the way out
            payload = json() if json is not None else cbor_to_json(payload)
        info = client.publish(topic, payload, qos=1, retain=False, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionLostError(f"publish failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    # --- connection management (main thread) -------------------------------

    def _read_password(self) -> str | None:
        path = self.settings.password_file
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError("mqtt.password_file", f"cannot read: {exc.strerror}") from exc

    def _new_client(self) -> paho.Client:
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        # Unlimited here: the pump holds the window itself (paho's own limit rescans its
        # whole message table on every PUBACK, a tenth of the CPU per event; issue 12).
        client.max_inflight_messages_set(0)
        will = _properties(PacketTypes.WILLMESSAGE)
        will.ContentType = "text/plain"
        client.will_set(self.topics.status, OFFLINE, qos=1, retain=True, properties=will)
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self._password)
        if self.settings.tls is TlsMode.ON:
            client.tls_set_context(self._tls_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the broker (hostname and chain) and, for mutual TLS, present our certificate.

        Built here, per connection attempt, so a renewed certificate or CA file is
        picked up on the next reconnect; a missing file is an OSError the caller
        backs off from.
        """
        settings = self.settings
        ca = str(settings.ca_file) if settings.ca_file else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.cert_file is not None:
            key = str(settings.key_file) if settings.key_file else None
            context.load_cert_chain(str(settings.cert_file), key)
        return context

    def tick(self, now: float) -> None:
        if self._dead:
            self._teardown()
        if self._client is None and now >= self._next_attempt:
            try:
                # Inside the try: tls_set() reads the CA and key files, which can
                # go missing; back off like any other failed attempt.
                self._client = self._new_client()
                self._refused = False
                self._client.connect_async(
                    self.settings.host,
                    self.settings.port,
                    keepalive=self.settings.keepalive_seconds,
                    clean_start=True,
                )
                self._client.loop_start()
            except (OSError, ValueError) as exc:
                self.last_error = str(exc)
                self._teardown()
            self._next_attempt = now + self.backoff.next_delay()

    def _teardown(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        self._dead = False
        if client is not None:
            try:
                client.disconnect()
            except Exception:
                log.debug("disconnect of a dead client failed", exc_info=True)
            client.loop_stop()

    def close(self, timeout: float = 2.0) -> None:
        """Say offline (retained) and disconnect cleanly, so the LWT is not needed."""
        client = self._client
        if client is not None and self._connected:
            info = self._publish(client, self.topics.status, OFFLINE, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.debug("offline status not confirmed before shutdown")
        self._teardown()

    def reply(
        self, command: IncomingCommand, body: bytes, content_type: str = CONTENT_TYPE
    ) -> None:
        client = self._client
        if client is None or not self._connected:
            return
        props = _properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        props.MessageExpiryInterval = REPLY_EXPIRY_SECONDS
        if command.correlation is not None:
            props.CorrelationData = command.correlation
        topic = command.response_topic or self.topics.default_reply(command.name)
        self._publish(client, topic, body, properties=props)

    def retarget(self, topics: Topics) -> None:
        """A new binding renamed the device: say offline under the old name, reconnect."""
        self.close()
        self.topics = topics
        self._next_attempt = 0.0

    def publish_retained(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is not None and self._connected:
            # A CBOR map (a tombstone) follows payload_format; text (ON/OFF, JSON) is
            # left alone: its first byte is never 0xa0-0xbf, a UTF-8 continuation byte.
            if self.json and payload and 0xA0 <= payload[0] <= 0xBF:
                payload = cbor_to_json(payload)
            self._publish(client, topic, payload, retain=True)

    def _publish(
        self,
        client: paho.Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> paho.MQTTMessageInfo:
        """Any QoS 1 message but a queued event: it takes a place in the pump's window."""
        info = client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc == paho.MQTT_ERR_SUCCESS:  # else no PUBACK will come to free the place
            self.pump.sent_elsewhere()
        return info

    # --- paho callbacks (paho's thread) ----------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if client is not self._client:
            return  # a client already torn down: its news is stale
        if reason.is_failure:
            self.last_error = f"connect refused: {reason}"
            self._refused = True
            self._dead = True
            self.wake.set()
            return
        # The broker's Receive Maximum bounds what may be in flight (MQTT v5 3.2.2.3.3).
        receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self._session = self.pump.on_connected(receive_maximum)
        self._connected = True
        self.connects += 1
        self.backoff.reset()
        client.subscribe(self.topics.commands, qos=1)
        self._publish(client, self.topics.status, ONLINE, retain=True)
        self.wake.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if client is not self._client:
            return
        self.last_error = "broker unreachable"
        self._dead = True
        self.wake.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        # _teardown() drops the client before disconnecting it: without this check
        # the old client's farewell would tear down the next, fresh connection.
        if client is not self._client:
            return
        self._connected = False
        self._dead = True
        # The broker closes a refused connection: that farewell (a bare "protocol
        # error" when it races the CONNACK) must not hide why it was refused.
        if not self._refused:
            self.last_error = f"disconnected: {reason}"
        self.wake.set()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        if client is not self._client:
            return  # a PUBACK of an old connection: its mids mean nothing now
        code = int(reason.value) if hasattr(reason, "value") else 0
        # is_set() first: Event.set() takes a lock the waiting loop contends for.
        if self.pump.on_ack(self._session, mid, code) and not self.wake.is_set():
            self.wake.set()
        # The place this PUBACK freed goes to the next message read ahead, from this thread.
        try:
            self.pump.refill(self)
        except Exception as exc:  # never into paho's loop; the main loop meets it too
            log.warning("could not send a queued event: %s", exc)

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        name = self.topics.command_name(message.topic)
        if name is None:
            return
        props = getattr(message, "properties", None)
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        content_type = getattr(props, "ContentType", None) if props is not None else None
        foreign = response is not None and not (
            isinstance(response, str) and self.topics.is_reply_topic(response)
        )
        if foreign:
            response = None
        self.commands.append(
            IncomingCommand(
                name,
                bytes(message.payload),
                response,
                correlation,
                foreign_response_topic=foreign,
                content_type=content_type if isinstance(content_type, str) else None,
            )
        )
        self.wake.set()


def client_id_for(device: str, suffix: Callable[[], str] | None = None) -> str:
    return f"edge-agent-{device}"[:64] if suffix is None else f"edge-agent-{device}-{suffix()}"[:64]
