"""Command a device the way its owner's app does: owner keys and a signed-command client.

Keys (:mod:`drivers.auth.keys`, re-exported here)::

    key = generate_key()
    save_private_key(Path("owner.key"), key)          # PKCS8 PEM, mode 0600, never clobbers
    public_key_hex(key), key_id_hex(key)              # what ``auth enrol`` / the app show

Commands (paho-mqtt 2.x, MQTT v5)::

    with CommandClient("broker.example", 8883, device_id="d0123...",
                       signing_key=load_private_key(Path("owner.key")),
                       tls=TlsOptions(ca_file=Path("ca.pem"))) as client:
        client.call("consent.set", {"purpose": "cloud_events", "granted": True})
        export = client.call("data.export", {"format": "json"})   # sealed to us, opened here

``payload_format="json"`` sends the same signed bytes in the JSON carriage
(``{"cose": "<base64>"}``, README "Commands in JSON") and reads JSON replies,
whose byte strings arrive as base64 text.

Every command is a COSE_Sign1 from :func:`agent.auth.envelope.sign_command`
with a strictly increasing counter (microseconds since the epoch, bumped past
the last one used).  Replies come back on one reply topic per client, under
the device's own ``reply/`` namespace (the device refuses any other), matched
by CorrelationData.  A confidential command -- ``data.export`` always, any
other with ``sealed=True`` -- carries an ephemeral X25519 ``reply_key``: the
device encrypts the result to it (COSE_Encrypt), so whoever else reads the
reply topic sees only ciphertext, and the key is forgotten after the call.
Secret *arguments* (a camera's password: :data:`SEALED_ARGUMENTS`) go the other
way, sealed to the device's X25519 sealing key (``args["sealed"]``, a
COSE_Encrypt0 bound to the command, device, counter and time: see
:mod:`agent.sealedparams`); pass ``sealing_key=`` read on the device to pin it.

Failures come as the agent's error tree: a refusal by the device or bad bytes
are :class:`~agent.errors.BadDataError` (retrying cannot help), a broker or
device that does not answer is :class:`~agent.errors.TransportError`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import cbor, jsonform
from agent.auth import cose
from agent.auth.envelope import REPLY_KEY, json_carriage, sign_command
from agent.config import is_loopback_host
from agent.errors import (
    BadDataError,
    ConnectionLostError,
    DecodeError,
    DeviceIOError,
    DeviceTimeoutError,
    EdgeAgentError,
    NotFoundError,
    PolicyError,
    TransportError,
    VerificationError,
)
from agent.sealedparams import SEALED, Binding, seal_params, sealing_kid

# The key helpers live in drivers.auth.keys; re-exported so one import serves a tool.
from drivers.auth.keys import (
    generate_key,
    key_id_hex,
    load_private_key,
    parse_public_key,
    public_key_hex,
    public_key_pem,
    public_key_raw,
    save_private_key,
)

__all__ = [
    "CONFIDENTIAL_COMMANDS",
    "PUBLIC_COMMANDS",
    "CommandClient",
    "CommandRefusedError",
    "DeviceFailedError",
    "TlsOptions",
    "generate_key",
    "key_id_hex",
    "load_private_key",
    "parse_public_key",
    "public_key_hex",
    "public_key_pem",
    "public_key_raw",
    "reply_error",
    "save_private_key",
]

CONTENT_TYPE = "application/cbor"
# Results that may only travel sealed (the device refuses them without a reply key).
CONFIDENTIAL_COMMANDS = frozenset({"data.export", "onvif.set_credentials"})
# Arguments that travel only sealed to the device's key (agent.sealedparams): the
# device refuses them in clear.  ``call(seal=...)`` seals others too.
SEALED_ARGUMENTS: Mapping[str, frozenset[str]] = {
    "camera.set_credentials": frozenset({"password"}),
    "onvif.set_credentials": frozenset({"password"}),
}
SEALING_KEY_COMMAND = "device.sealing_key"
# Answered without a signature; signing them would only burn a counter (and an
# untrusted key's signature is refused even here).
PUBLIC_COMMANDS = frozenset({"status"})
# Device answers the client treats as "try again later" rather than "wrong request".
TRANSIENT_CODES = frozenset({"unavailable", "internal"})
MAX_REPLY_BYTES = 64 * 1024 * 1024
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}$")

# --- errors from the device -------------------------------------------------------


class CommandRefusedError(BadDataError):
    """The device answered ``ok: false`` for a reason sending the same again will not fix."""

    def __init__(self, command: str, code: str, message: str) -> None:
        self.command, self.code, self.message = command, code, message
        super().__init__(f"{command}: {code}: {message}")


class DeviceFailedError(TransportError):
    """The device answered ``unavailable`` or ``internal``: it may work later."""

    def __init__(self, command: str, code: str, message: str) -> None:
        self.command, self.code, self.message = command, code, message
        super().__init__(f"{command}: {code}: {message}")


def _one_line(value: object, limit: int) -> str:
    return " ".join(str(value).split())[:limit]


def reply_error(command: str, error: object) -> EdgeAgentError:
    """The exception for a reply's ``error`` map: one line, code then message."""
    fields = error if isinstance(error, Mapping) else {}
    code = _one_line(fields.get("code", "error"), 64) or "error"
    message = _one_line(fields.get("message", ""), 300) or "(no message)"
    kind = DeviceFailedError if code in TRANSIENT_CODES else CommandRefusedError
    return kind(command, code, message)


# --- the client -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TlsOptions:
    """Verify the broker against ``ca_file`` (else the system CAs); optional client cert."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        try:
            ca = str(self.ca_file) if self.ca_file else None
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert_file is not None:
                key = str(self.key_file) if self.key_file else None
                context.load_cert_chain(str(self.cert_file), key)
        except FileNotFoundError as exc:
            raise NotFoundError(f"TLS file {exc.filename or ''} does not exist") from None
        except ssl.SSLError as exc:
            raise DecodeError(f"cannot load TLS certificate or key: {exc.reason or exc}") from None
        except OSError as exc:
            raise DeviceIOError(f"cannot read TLS files: {exc.strerror or exc}") from exc
        return context


@dataclasses.dataclass
class _Pending:
    event: threading.Event = dataclasses.field(default_factory=threading.Event)
    payload: bytes | None = None
    error: EdgeAgentError | None = None


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class CommandClient:
    """One MQTT v5 connection that sends signed commands to one device and waits for replies.

    ``tls=None`` is plaintext, refused for a broker off this host unless
    ``allow_plaintext`` (as the agent itself does).  Thread-safe: calls from
    several threads share the connection and are told apart by correlation data.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        device_id: str,
        signing_key: ed25519.Ed25519PrivateKey,
        prefix: str = "edge",
        tls: TlsOptions | None = TlsOptions(),  # frozen: one shared default is safe
        allow_plaintext: bool = False,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 10.0,
        keepalive: int = 30,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        clock: Callable[[], float] = time.time,
        payload_format: str = "cbor",
        sealing_key: bytes | None = None,
    ) -> None:
        if payload_format not in ("cbor", "json"):
            raise DecodeError(f"payload_format must be 'cbor' or 'json', not {payload_format!r}")
        self.json = payload_format == "json"
        for what, segment in (("device id", device_id), ("topic prefix", prefix)):
            if not segment or any(c in segment for c in "+#\x00") or segment.strip("/") != segment:
                raise DecodeError(f"{what} {segment[:64]!r} is not a valid topic segment")
        if "/" in device_id:
            raise DecodeError("the device id is one topic segment (no '/')")
        if tls is None and not allow_plaintext and not is_loopback_host(host):
            raise PolicyError(
                f"broker {host!r} is not on this host and TLS is off: commands and replies "
                "would cross the network in clear text (allow_plaintext to insist)"
            )
        self.host, self.port = host, port
        self.device_id, self.prefix = device_id, prefix
        self.tls = tls
        self.username, self.password = username, password
        self.connect_timeout, self.keepalive = connect_timeout, keepalive
        self.max_reply_bytes = max_reply_bytes
        self._key = signing_key
        self._clock = clock
        # The device's sealing key: pinned by the caller (read on the device), else
        # fetched once with the owner-signed device.sealing_key (agent.sealedparams).
        if sealing_key is not None and len(sealing_key) != 32:
            raise DecodeError("the sealing key is a raw 32-byte X25519 public key")
        self.sealing_key = sealing_key
        self.base = f"{prefix}/{device_id}"
        # One topic per client, random: no other client's replies land in it by accident.
        self.reply_topic = f"{self.base}/reply/client-{secrets.token_hex(8)}"
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._last_counter = 0
        self._client: Any = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._failure: EdgeAgentError | None = None

    # --- connection ----------------------------------------------------------------

    def __enter__(self) -> CommandClient:
        self.connect()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect and subscribe to the reply topic; idempotent, reconnects after a drop."""
        if self._client is not None:
            if self._failure is None:
                return
            self.close()  # the broker dropped us: a fresh client, a fresh session
        self._connected.clear()
        self._subscribed.clear()
        self._failure = None
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-remote-{secrets.token_hex(6)}",
            protocol=paho.MQTTv5,
        )
        client.connect_timeout = self.connect_timeout
        if self.tls is not None:
            client.tls_set_context(self.tls.context())
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        where = f"{self.host}:{self.port}"
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=True)
        except ssl.SSLCertVerificationError as exc:
            raise VerificationError(
                f"the broker at {where} has a certificate that does not verify: "
                f"{exc.verify_message or exc.reason}"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectionLostError(f"TLS with {where} failed: {exc.reason or exc}") from None
        except TimeoutError:
            raise DeviceTimeoutError(f"the broker at {where} did not answer in time") from None
        except OSError as exc:
            raise ConnectionLostError(
                f"cannot reach the broker at {where}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise DecodeError(f"cannot connect to {where}: {exc}") from None
        self._client = client
        client.loop_start()
        try:
            self._await(self._connected, f"the broker at {where} did not accept the connection")
            info = client.subscribe(self.reply_topic, qos=1)
            if info[0] != paho.MQTT_ERR_SUCCESS:
                raise ConnectionLostError(f"subscribe failed: {paho.error_string(info[0])}")
            self._await(self._subscribed, "the broker did not confirm the reply subscription")
        except BaseException:
            self.close()
            raise

    def _await(self, event: threading.Event, what: str) -> None:
        if not event.wait(self.connect_timeout) and self._failure is None:
            raise DeviceTimeoutError(what)
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()
        self._fail_pending(ConnectionLostError("the client was closed"))

    def _fail_pending(self, error: EdgeAgentError) -> None:
        with self._lock:
            for pending in self._pending.values():
                pending.error = error
                pending.event.set()

    # --- commands --------------------------------------------------------------------

    def next_counter(self) -> int:
        """Microseconds since the epoch, strictly above the last one this client used."""
        with self._lock:
            self._last_counter = max(self._last_counter + 1, time.time_ns() // 1000)
            return self._last_counter

    def command_topic(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def call(
        self,
        name: str,
        args: Mapping[str, object] | None = None,
        timeout: float = 10.0,
        *,
        sealed: bool = False,
        seal: frozenset[str] = frozenset(),
    ) -> dict[str, object]:
        """Send ``name`` signed, wait for the reply and return its result.

        The arguments :data:`SEALED_ARGUMENTS` names for ``name``, and those in
        ``seal``, go encrypted to the device's sealing key (``args["sealed"]``).

        Raises :class:`CommandRefusedError` / :class:`DeviceFailedError` for
        an error reply, :class:`~agent.errors.DeviceTimeoutError` when none comes.
        """
        if not _NAME.match(name):
            raise DecodeError(f"bad command name {name[:64]!r}")
        arguments = dict(args or {})
        if REPLY_KEY in arguments:
            raise DecodeError(f"{REPLY_KEY} is the client's to add: pass sealed=True")
        reply_secret: x25519.X25519PrivateKey | None = None
        if sealed or name in CONFIDENTIAL_COMMANDS:
            reply_secret = x25519.X25519PrivateKey.generate()
            arguments[REPLY_KEY] = cose.raw_public(reply_secret.public_key())
        secret = (SEALED_ARGUMENTS.get(name, frozenset()) | seal) & set(arguments)
        if name in PUBLIC_COMMANDS and reply_secret is None and not secret:
            payload = jsonform.dumps(arguments) if self.json else cbor.dumps(arguments)
        else:
            if secret:
                recipient = self.device_sealing_key(timeout)
            counter, now = self.next_counter(), self._clock()
            if secret:
                params = {field: arguments.pop(field) for field in sorted(secret)}
                binding = Binding(self.device_id, name, counter, int(now))
                arguments[SEALED] = seal_params(recipient, params, binding)
            payload = sign_command(
                self._key, self.device_id, name, arguments, counter=counter, now=now
            )
            if self.json:
                payload = json_carriage(payload)
        self.connect()
        return self._result(name, self._exchange(name, payload, timeout), reply_secret)

    def device_sealing_key(self, timeout: float = 10.0) -> bytes:
        """The key secret arguments are sealed to: the pinned one, else asked for once.

        Asked for, it is as authentic as the broker that carried the reply (see
        :mod:`agent.sealedparams`); pin the key read on the device against a
        broker that may rewrite replies.
        """
        if self.sealing_key is None:
            result = self.call(SEALING_KEY_COMMAND, timeout=timeout)
            key, kid = result.get("key"), result.get("kid")
            if isinstance(key, str):  # a JSON reply carries bytes as base64 text
                try:
                    key = base64.b64decode(key, validate=True)
                except (binascii.Error, ValueError):
                    key = None
            if not isinstance(key, bytes) or len(key) != 32 or kid != sealing_kid(key).hex():
                raise DecodeError(f"{SEALING_KEY_COMMAND}: the reply carries no valid key")
            self.sealing_key = key
        return self.sealing_key

    def _exchange(self, name: str, payload: bytes, timeout: float) -> bytes:
        client = self._client
        if client is None:
            raise ConnectionLostError("not connected")
        correlation = secrets.token_bytes(16)
        pending = _Pending()
        with self._lock:
            self._pending[correlation] = pending
        try:
            props = _properties(PacketTypes.PUBLISH)
            props.ContentType = jsonform.JSON_CONTENT_TYPE if self.json else CONTENT_TYPE
            props.ResponseTopic = self.reply_topic
            props.CorrelationData = correlation
            info = client.publish(self.command_topic(name), payload, qos=1, properties=props)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise ConnectionLostError(f"{name}: publish failed: {paho.error_string(info.rc)}")
            if not pending.event.wait(timeout):
                raise DeviceTimeoutError(
                    f"{name}: no reply from device {self.device_id} within {timeout:g} s "
                    "(is it online, and is the device id current?)"
                )
        finally:
            with self._lock:
                self._pending.pop(correlation, None)
        if pending.error is not None:
            raise pending.error
        assert pending.payload is not None
        return pending.payload

    def _result(
        self, name: str, payload: bytes, reply_secret: x25519.X25519PrivateKey | None
    ) -> dict[str, object]:
        if payload[:1] == b"{":  # a JSON reply (a CBOR reply map never starts so)
            reply = jsonform.loads_untrusted(payload, max_bytes=self.max_reply_bytes, max_depth=64)
            if isinstance(reply, dict) and isinstance(reply.get("sealed"), str):
                try:
                    reply["sealed"] = base64.b64decode(reply["sealed"], validate=True)
                except (binascii.Error, ValueError):
                    raise DecodeError(f"{name}: the sealed reply is not base64") from None
        else:
            reply = cbor.loads_untrusted(payload, max_bytes=self.max_reply_bytes)
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise DecodeError(f"{name}: the reply is not a command reply")
        if not reply["ok"]:
            raise reply_error(name, reply.get("error"))
        if reply_secret is not None:
            sealed = reply.get("sealed")
            if not isinstance(sealed, bytes):
                raise PolicyError(f"{name}: a sealed reply was asked for, the device sent clear")
            plain = cose.open_sealed(reply_secret, sealed, max_bytes=self.max_reply_bytes)
            result = cbor.loads_untrusted(plain, max_bytes=self.max_reply_bytes)
        else:
            result = reply.get("result")
        if not isinstance(result, dict):
            raise DecodeError(f"{name}: the reply carries no result map")
        return result

    # --- paho callbacks (paho's thread: record and wake, nothing else) ---------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            refused = {0x86, 0x87, 0x8C}  # bad credentials, not authorised, bad auth method
            value = int(getattr(reason, "value", 0))
            kind = PolicyError if value in refused else ConnectionLostError
            self._failure = kind(f"the broker refused the connection: {reason}")
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(getattr(r, "is_failure", False) for r in reasons):
            self._failure = PolicyError(
                f"the broker refused the subscription to {self.reply_topic}: {reasons[0]}"
            )
        self._subscribed.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        error = ConnectionLostError(f"the broker closed the connection: {reason}")
        if self._failure is None:
            self._failure = error
        self._connected.set()
        self._subscribed.set()
        self._fail_pending(error)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic != self.reply_topic:
            return
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            pending = self._pending.get(bytes(correlation)) if correlation else None
            if pending is not None and not pending.event.is_set():
                pending.payload = bytes(message.payload)
                pending.event.set()
