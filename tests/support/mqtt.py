"""A real MQTT v5 subscriber/requester for tests (paho-mqtt against the test broker)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import cbor2
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Collector:
    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect(host, port)
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
            return [cbor2.loads(m.payload) for m in self.messages if "/events/" in m.topic]

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return bool(predicate(self))

    def request(
        self, topic: str, args: Any, timeout: float = 10.0, raw: bytes | None = None
    ) -> Any:
        """Publish a command with ResponseTopic + CorrelationData and wait for the reply."""
        correlation = uuid.uuid4().bytes
        response_topic = f"test/replies/{uuid.uuid4().hex}"
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
        return cbor2.loads(got[0].payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
