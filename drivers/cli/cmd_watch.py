"""``edge-agent watch``: the device's MQTT topics, decoded, one line per message.

It connects to the broker the configuration names (``[mqtt]``: host, port, TLS,
CA and client certificate, user name), subscribes to ``<prefix>/<device>/#``
and prints each message as ``TOPIC PAYLOAD`` with the payload decoded: CBOR or
JSON by the message's content type, else by its first byte (``{``/``[`` is
JSON), plain text (``online``, ``ON``) as it is.  ``--json`` prints one JSON
object per line instead (``topic``, ``content_type``, ``retained``,
``payload``): byte strings (an event's ``img``) become base64, as in the JSON
payload format.  ``--count N`` and ``--timeout S`` end it for scripts.
"""

from __future__ import annotations

import argparse
import queue
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

from agent import cbor, jsonform
from agent.errors import (
    ConfigError,
    ConnectionLostError,
    DecodeError,
    DeviceTimeoutError,
    VerificationError,
)
from drivers.cli.common import add_config_options, add_json_option, load_config

if TYPE_CHECKING:
    from agent.config import AgentConfig

MAX_PAYLOAD = 16 * 1024 * 1024
MAX_DEPTH = 32
# Human output: a byte string longer than this is summarised, not dumped.
MAX_SHOWN_BYTES = 32


def decode_payload(payload: bytes, content_type: str | None) -> tuple[str, object]:
    """(format, value) of one message: ``cbor``, ``json``, ``text`` or ``binary``."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind:
        head = payload[:1]
        if head in (b"{", b"["):
            kind = jsonform.JSON_CONTENT_TYPE
        elif payload and head[0] >= 0x80:
            # Every event and reply is a CBOR map (major type 5, 0xa0-0xbf) or array.
            kind = jsonform.CBOR_CONTENT_TYPE
    try:
        if kind == jsonform.JSON_CONTENT_TYPE:
            return "json", jsonform.loads_untrusted(
                payload, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH
            )
        if kind == jsonform.CBOR_CONTENT_TYPE:
            return "cbor", cbor.loads_untrusted(
                payload, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH
            )
    except DecodeError:
        return "binary", payload
    try:
        return "text", payload.decode("utf-8")
    except UnicodeDecodeError:
        return "binary", payload


def _shorten(value: object) -> object:
    if isinstance(value, bytes) and len(value) > MAX_SHOWN_BYTES:
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    return value


def format_line(
    topic: str, payload: bytes, content_type: str | None, retained: bool, *, as_json: bool
) -> str:
    kind, value = decode_payload(payload, content_type)
    if as_json:
        document = {
            "topic": topic,
            "content_type": content_type,
            "format": kind,
            "retained": retained,
            "payload": value,
        }
        return jsonform.dumps(document).decode("utf-8")
    if kind == "text":
        shown = str(value) if value != "" else "(empty)"
    elif kind == "binary":
        shown = f"<{len(payload)} bytes, not CBOR, JSON or text>"
    else:
        shown = jsonform.dumps(_shorten(value)).decode("utf-8")
    return f"{topic} {shown}"


def _device_id(args: argparse.Namespace) -> str:
    if args.device_id:
        return str(args.device_id)
    from drivers.cli.composed import composed

    with composed(args) as c:
        return c.principals.device_id


def _client(config: AgentConfig) -> Any:
    import ssl  # lazy: ssl is a tenth of what --help paid

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.config import TlsMode  # lazy: --help stays light

    mqtt = config.mqtt
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edge-watch-{secrets.token_hex(6)}",
        protocol=paho.MQTTv5,
    )
    if mqtt.tls is TlsMode.ON:
        try:
            ca = str(mqtt.ca_file) if mqtt.ca_file else None
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if mqtt.cert_file is not None:
                key = str(mqtt.key_file) if mqtt.key_file else None
                context.load_cert_chain(str(mqtt.cert_file), key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("mqtt", f"cannot load the TLS files: {exc}") from None
        client.tls_set_context(context)
    if mqtt.username is not None:
        password = None
        if mqtt.password_file is not None:
            try:
                password = mqtt.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError("mqtt.password_file", f"cannot read: {exc.strerror}") from None
        client.username_pw_set(mqtt.username, password)
    return client


def _watch(args: argparse.Namespace) -> int:
    import ssl  # lazy: --help stays light

    config = load_config(args)
    mqtt = config.mqtt
    if not mqtt.enabled:
        raise ConfigError("mqtt.enabled", "the broker is disabled in this configuration")
    topic = f"{mqtt.topic_prefix}/{_device_id(args)}/#"
    client = _client(config)
    lines: queue.Queue[tuple[str, bytes, str | None, bool] | BaseException] = queue.Queue()
    where = f"{mqtt.host}:{mqtt.port}"

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            lines.put(ConnectionLostError(f"the broker at {where} refused us: {reason}"))
            return
        client.subscribe(topic, qos=1)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        props = getattr(message, "properties", None)
        content_type = getattr(props, "ContentType", None) if props is not None else None
        lines.put((message.topic, bytes(message.payload), content_type, bool(message.retain)))

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_seconds)
    except ssl.SSLCertVerificationError as exc:
        raise VerificationError(
            f"the broker at {where} has a certificate that does not verify: "
            f"{exc.verify_message or exc.reason}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionLostError(f"cannot reach the broker at {where}: {exc}") from None
    print(f"edge-agent: watching {topic} on {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    client.loop_start()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    seen = 0
    try:
        while args.count == 0 or seen < args.count:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            try:
                item = lines.get(timeout=wait)
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise item
            print(format_line(*item, as_json=args.json), flush=True)
            seen += 1
    finally:
        client.disconnect()
        client.loop_stop()
    if args.count and seen < args.count:
        raise DeviceTimeoutError(f"{seen} of {args.count} messages within {args.timeout:g} s")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="print the device's MQTT messages, decoded (CBOR or JSON), one per line",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(parser)
    add_json_option(parser)
    parser.add_argument(
        "--device-id", default=None,
        help="the device's id in its topics (default: this device's, from the state directory)",
    )
    parser.add_argument(
        "--count", type=int, default=0, metavar="N",
        help="stop after N messages (default 0: until Ctrl-C)",
    )
    parser.add_argument(
        "--timeout", type=float, default=0.0, metavar="SECONDS",
        help="stop after this long (default 0: no limit); with --count, fewer is an error",
    )
    parser.set_defaults(func=_watch)
