"""A real MQTT v5 subscriber/requester for tests (paho-mqtt against the test broker)."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import uuid
from typing import Any

import cbor2
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import x25519
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.auth.cose import open_sealed, raw_public
from tests.support.owner import Signer


def decode_payload(payload: bytes) -> Any:
    """An event or reply in either format (JSON starts with ``{``; CBOR never does).

    JSON's base64 ``img`` and ``sealed`` come back as bytes, as CBOR gives them.
    """
    data = bytes(payload)
    if data[:1] != b"{":
        return cbor2.loads(data)
    value = json.loads(data)
    if isinstance(value, dict):
        for key in ("img", "sealed"):
            if isinstance(value.get(key), str):
                value[key] = base64.b64decode(value[key])
    return value


class Collector:
    """Subscribes to ``topic`` and keeps what arrives.

    With ``session`` (a client id) the broker keeps the subscription and queues
    QoS 1 messages while this subscriber is away; a later Collector with the same
    ``session`` receives them, as a receiver with a persistent session does.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        tls: ssl.SSLContext | None = None,
        session: str | None = None,
    ) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=session or f"test-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        if tls is not None:
            self.client.tls_set_context(tls)
        if session is None:
            self.client.connect(host, port)
        else:
            keep = Properties(PacketTypes.CONNECT)
            keep.SessionExpiryInterval = 3600
            self.client.connect(host, port, clean_start=False, properties=keep)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not confirmed"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(message)

    def topics(self) -> list[str]:
        with self._lock:
            return [m.topic for m in self.messages]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [decode_payload(m.payload) for m in self.messages if "/events/" in m.topic]

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return bool(predicate(self))

    def request(
        self,
        topic: str,
        args: Any,
        timeout: float = 10.0,
        raw: bytes | None = None,
        *,
        signer: Signer | None = None,
        response_topic: str | None = None,
        sealed: bool = False,
        secrets: dict[str, object] | None = None,
        sealing_key: bytes | None = None,
    ) -> Any:
        """Publish a command with ResponseTopic + CorrelationData and wait for the reply.

        ``topic`` is ``<prefix>/<device id>/cmd/<name>``; with ``signer`` the
        arguments go signed for that device and name.  The reply topic lies in
        the device's own ``reply/`` namespace unless the test names another.
        ``secrets`` travel sealed to ``sealing_key`` (agent.sealedparams).
        """
        correlation = uuid.uuid4().bytes
        base, _, name = topic.rpartition("/cmd/")
        if response_topic is None:
            response_topic = f"{base}/reply/test-{uuid.uuid4().hex}"
        reply_key = x25519.X25519PrivateKey.generate() if sealed else None
        if signer is not None and raw is None:
            signed_args = dict(args or {})
            if reply_key is not None:
                signed_args["reply_key"] = raw_public(reply_key.public_key())
            raw = signer.sign(
                base.rsplit("/", 1)[-1], name, signed_args, secrets=secrets, sealing_key=sealing_key
            )
        got: list[Any] = []
        done = threading.Event()

        def on_reply(client: Any, userdata: Any, message: Any) -> None:
            if getattr(message.properties, "CorrelationData", None) == correlation:
                got.append(message)
                done.set()

        self.client.message_callback_add(response_topic, on_reply)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe(response_topic, qos=1)
        assert subscribed.wait(5)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.CorrelationData = correlation
        payload = raw if raw is not None else cbor2.dumps(args)
        self.client.publish(topic, payload, qos=1, properties=props)
        assert done.wait(timeout), f"no reply on {response_topic}"
        self.last_raw_reply = bytes(got[0].payload)
        self.last_reply_properties = got[0].properties
        answer = decode_payload(got[0].payload)
        if reply_key is not None and isinstance(answer, dict) and "sealed" in answer:
            opened = open_sealed(reply_key, answer["sealed"], max_bytes=64 * 1024 * 1024)
            return {"ok": answer["ok"], "result": cbor2.loads(opened)}
        return answer

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class V311Requester:
    """A plain MQTT v3.1.1 client (Node-RED's and Home Assistant's default) sending JSON.

    No properties exist in v3.1.1: the reply topic and correlation ride in the JSON.
    """

    def __init__(self, host: str, port: int) -> None:
        self.replies: list[Any] = []
        self._got = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"v311-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
        )
        self.client.on_message = self._on_message
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        assert connected.wait(10), "v3.1.1 client did not connect"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.replies.append(message)
        self._got.set()

    def request(self, topic: str, payload: bytes, reply_topic: str, timeout: float = 10.0) -> Any:
        """Publish ``payload`` as is; the first message on ``reply_topic`` is the answer."""
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe(reply_topic, qos=1)
        assert subscribed.wait(5)
        self._got.clear()
        self.replies.clear()
        self.client.publish(topic, payload, qos=1)
        assert self._got.wait(timeout), f"no reply on {reply_topic}"
        self.last_raw_reply = bytes(self.replies[0].payload)
        return json.loads(self.last_raw_reply)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
