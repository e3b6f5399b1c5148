"""Interpreting a SUIT manifest (draft-ietf-suit-manifest) for a single-image A/B device.

The command sequences are walked, not executed: directive-override-parameters
set the component's parameters, conditions are recorded (the installer and
:mod:`policy` enforce them), anything this device cannot honour -- several
components, dependencies, try-each, copy/swap, integrated payloads,
encryption -- is refused with :class:`UnsupportedFeatureError` naming it.

Device-specific members use negative manifest keys (implementation-defined):
``-257`` new trusted key set (list of SubjectPublicKeyInfo DER, for key rotation),
``-258`` expiry (epoch seconds), ``-259`` precursor image digest for a delta,
``-260`` human-readable software version.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping

from agent.errors import DecodeError, VerificationError
from agent.upgrade import cborguard
from agent.upgrade.digest import parse_digest, wrapped_sha256
from agent.upgrade.errors import UnsupportedFeatureError
from agent.upgrade.keys import TrustedKey, key_from_bytes

MAX_MANIFEST_BYTES = 64 * 1024
MAX_KEYS = 8

M_VERSION, M_SEQUENCE, M_COMMON, M_REFERENCE_URI = 1, 2, 3, 4
M_VALIDATE, M_LOAD, M_INVOKE, M_PAYLOAD_FETCH, M_INSTALL, M_TEXT = 7, 8, 9, 16, 20, 23
M_NEW_KEYS, M_EXPIRES, M_PRECURSOR, M_SOFTWARE_VERSION = -257, -258, -259, -260
COMMON_DEPENDENCIES, COMMON_COMPONENTS, COMMON_SHARED_SEQUENCE = 1, 2, 4

P_VENDOR_ID, P_CLASS_ID, P_IMAGE_DIGEST, P_SLOT = 1, 2, 3, 5
P_STRICT_ORDER, P_SOFT_FAILURE, P_IMAGE_SIZE, P_URI = 12, 13, 14, 21
KNOWN_PARAMETERS = frozenset(
    {P_VENDOR_ID, P_CLASS_ID, P_IMAGE_DIGEST, P_STRICT_ORDER, P_SOFT_FAILURE, P_IMAGE_SIZE, P_URI}
)

C_VENDOR, C_CLASS, C_IMAGE_MATCH = 1, 2, 3
D_SET_COMPONENT_INDEX, D_SET_PARAMETERS, D_OVERRIDE_PARAMETERS = 12, 19, 20
D_FETCH, D_INVOKE = 21, 23
COMMAND_NAMES: Mapping[int, str] = {
    4: "condition-use-before",
    5: "condition-component-slot",
    6: "condition-check-content",
    7: "condition-dependency-integrity",
    8: "condition-is-dependency",
    14: "condition-abort",
    15: "directive-try-each",
    17: "directive-process-dependency",
    18: "directive-write",
    22: "directive-copy",
    24: "condition-device-identifier",
    31: "directive-swap",
    32: "directive-run-sequence",
}


@dataclasses.dataclass(frozen=True)
class Manifest:
    manifest_version: int
    sequence: int
    component_id: tuple[bytes, ...]
    vendor_id: uuid.UUID | None
    class_id: uuid.UUID | None
    image_digest: bytes | None
    image_size: int | None
    uri: str | None
    checks_vendor: bool
    checks_class: bool
    checks_image: bool
    expires_at: int | None = None
    precursor_digest: bytes | None = None
    software_version: str = ""
    new_keys: tuple[TrustedKey, ...] = ()
    reference_uri: str | None = None


@dataclasses.dataclass
class _Walk:
    parameters: dict[int, object] = dataclasses.field(default_factory=dict)
    conditions: set[int] = dataclasses.field(default_factory=set)


def _uint(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**64:
        raise DecodeError(f"{what} must be an unsigned integer")
    return value


def _sequence(raw: object, what: str, walk: _Walk) -> None:
    if not isinstance(raw, bytes):
        raise DecodeError(f"{what} must be a bstr-wrapped command sequence")
    commands = cborguard.loads(raw, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(commands, list | tuple) or len(commands) % 2:
        raise DecodeError(f"{what}: command sequence must be pairs of [command, argument]")
    for command, argument in zip(commands[::2], commands[1::2], strict=True):
        if not isinstance(command, int) or isinstance(command, bool):
            raise DecodeError(f"{what}: command id must be an integer")
        if command in (C_VENDOR, C_CLASS, C_IMAGE_MATCH):
            _uint(argument, f"{what}: reporting policy")
            walk.conditions.add(command)
        elif command == D_SET_COMPONENT_INDEX:
            if argument not in (0, True) or argument is False:
                raise UnsupportedFeatureError(f"{what}: component index {argument!r} (one image)")
        elif command in (D_OVERRIDE_PARAMETERS, D_SET_PARAMETERS):
            if not isinstance(argument, Mapping):
                raise DecodeError(f"{what}: parameters must be a map")
            for key, value in argument.items():
                if key not in KNOWN_PARAMETERS or isinstance(key, bool):
                    name = "component-slot" if key == P_SLOT else repr(key)
                    raise UnsupportedFeatureError(f"{what}: parameter {name} is not supported")
                if command == D_OVERRIDE_PARAMETERS or key not in walk.parameters:
                    walk.parameters[key] = value
        elif command in (D_FETCH, D_INVOKE):
            _uint(argument, f"{what}: reporting policy")
        else:
            name = COMMAND_NAMES.get(command, f"command {command}")
            raise UnsupportedFeatureError(f"{what}: {name} is not supported")


def _member(
    manifest: Mapping[object, object], key: int, severable: Mapping[int, bytes], what: str
) -> object:
    """A manifest member, following a severed digest to the envelope's copy."""
    value = manifest.get(key)
    if isinstance(value, list | tuple):
        expected = parse_digest(value, f"severed {what}")
        element = severable.get(key)
        if element is None:
            raise DecodeError(f"severed {what} is not in the envelope")
        if wrapped_sha256(element) != expected:
            raise VerificationError(f"severed {what} does not match its digest in the manifest")
        return element
    return value


def _component(common: Mapping[object, object]) -> tuple[bytes, ...]:
    if COMMON_DEPENDENCIES in common:
        raise UnsupportedFeatureError("dependencies are not supported")
    components = common.get(COMMON_COMPONENTS)
    if not isinstance(components, list | tuple) or not components:
        raise DecodeError("common.components must be a non-empty list")
    if len(components) != 1:
        raise UnsupportedFeatureError(f"{len(components)} components (this device has one image)")
    component = components[0]
    if not isinstance(component, list | tuple) or not all(isinstance(p, bytes) for p in component):
        raise DecodeError("a component id must be a list of byte strings")
    return tuple(component)


def _uuid(value: object, what: str) -> uuid.UUID | None:
    if value is None:
        return None
    if not isinstance(value, bytes) or len(value) != 16:
        raise DecodeError(f"{what} must be a 16-byte UUID")
    return uuid.UUID(bytes=value)


@dataclasses.dataclass(frozen=True)
class _Extensions:
    expires_at: int | None
    precursor_digest: bytes | None
    software_version: str
    new_keys: tuple[TrustedKey, ...]


def _extensions(manifest: Mapping[object, object]) -> _Extensions:
    expires = manifest.get(M_EXPIRES)
    precursor = manifest.get(M_PRECURSOR)
    version = manifest.get(M_SOFTWARE_VERSION, "")
    if not isinstance(version, str) or len(version) > 64:
        raise DecodeError("software version must be a string of at most 64 characters")
    keys = manifest.get(M_NEW_KEYS, [])
    if not isinstance(keys, list | tuple) or len(keys) > MAX_KEYS:
        raise DecodeError(f"new key set must be a list of at most {MAX_KEYS} keys")
    if not all(isinstance(k, bytes) for k in keys):
        raise DecodeError("new keys must be DER SubjectPublicKeyInfo byte strings")
    return _Extensions(
        expires_at=None if expires is None else _uint(expires, "expiry"),
        precursor_digest=None if precursor is None else parse_digest(precursor, "precursor"),
        software_version=version,
        new_keys=tuple(key_from_bytes(k) for k in keys),
    )


def parse_manifest(data: bytes, severable: Mapping[int, bytes] | None = None) -> Manifest:
    """Interpret manifest bytes (already authenticated by the envelope)."""
    severable = severable or {}
    manifest = cborguard.loads(data, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(manifest, Mapping):
        raise DecodeError("manifest must be a map")
    known = {
        M_VERSION,
        M_SEQUENCE,
        M_COMMON,
        M_REFERENCE_URI,
        M_VALIDATE,
        M_INVOKE,
        M_INSTALL,
        M_TEXT,
        M_NEW_KEYS,
        M_EXPIRES,
        M_PRECURSOR,
        M_SOFTWARE_VERSION,
    }
    for key in manifest:
        if key == M_LOAD:
            raise UnsupportedFeatureError("load sequence (copy/decompress to RAM) is not supported")
        if key == M_PAYLOAD_FETCH:
            raise UnsupportedFeatureError("payload-fetch sequence is not supported")
        if key not in known or isinstance(key, bool):
            raise UnsupportedFeatureError(f"manifest member {key!r} is not supported")
    version = _uint(manifest.get(M_VERSION), "manifest-version")
    if version != 1:
        raise UnsupportedFeatureError(f"manifest-version {version} (only 1)")
    sequence = _uint(manifest.get(M_SEQUENCE), "manifest-sequence-number")
    common_raw = manifest.get(M_COMMON)
    if not isinstance(common_raw, bytes):
        raise DecodeError("manifest common must be bstr-wrapped")
    common = cborguard.loads(common_raw, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(common, Mapping):
        raise DecodeError("manifest common must be a map")
    component = _component(common)
    walk = _Walk()
    if COMMON_SHARED_SEQUENCE in common:
        _sequence(common[COMMON_SHARED_SEQUENCE], "shared-sequence", walk)
    for key, what in ((M_VALIDATE, "validate"), (M_INSTALL, "install"), (M_INVOKE, "invoke")):
        if key in manifest:
            _sequence(_member(manifest, key, severable, what), what, walk)
    if M_TEXT in manifest:
        _member(manifest, M_TEXT, severable, "text")
    reference = manifest.get(M_REFERENCE_URI)
    if reference is not None and not isinstance(reference, str):
        raise DecodeError("reference-uri must be text")
    return _build(
        walk,
        version=version,
        sequence=sequence,
        component=component,
        reference=reference,
        extensions=_extensions(manifest),
    )


def _build(
    walk: _Walk,
    *,
    version: int,
    sequence: int,
    component: tuple[bytes, ...],
    reference: str | None,
    extensions: _Extensions,
) -> Manifest:
    params = walk.parameters
    digest_raw = params.get(P_IMAGE_DIGEST)
    size_raw = params.get(P_IMAGE_SIZE)
    uri = params.get(P_URI)
    if uri is not None and (not isinstance(uri, str) or len(uri) > 2048):
        raise DecodeError("uri must be text of at most 2048 characters")
    return Manifest(
        manifest_version=version,
        sequence=sequence,
        component_id=component,
        vendor_id=_uuid(params.get(P_VENDOR_ID), "vendor-id"),
        class_id=_uuid(params.get(P_CLASS_ID), "class-id"),
        image_digest=None if digest_raw is None else parse_digest(digest_raw, "image-digest"),
        image_size=None if size_raw is None else _uint(size_raw, "image-size"),
        uri=uri,
        checks_vendor=C_VENDOR in walk.conditions,
        checks_class=C_CLASS in walk.conditions,
        checks_image=C_IMAGE_MATCH in walk.conditions,
        reference_uri=reference,
        expires_at=extensions.expires_at,
        precursor_digest=extensions.precursor_digest,
        software_version=extensions.software_version,
        new_keys=extensions.new_keys,
    )
