"""``edge-agent upgrade check|apply|status|sign|keygen``."""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from agent.atomicfile import write_atomic
from agent.errors import DecodeError, DeviceIOError, NotFoundError, PolicyError
from agent.upgrade.algorithms import ALG_ED25519, ALG_EDDSA, ALG_ES256
from drivers.cli.common import add_config_options, add_json_option, load_config
from drivers.cli.output import print_json

if TYPE_CHECKING:
    from drivers.upgrade.installer import Installer

BAR_WIDTH = 30
# ``upgrade sign --alg``: COSE algorithm ids by name.  An Ed25519 key signs as EdDSA (-8,
# the default: every COSE library reads it) or Ed25519 (-19); a P-256 key as ES256.
SIGN_ALGORITHMS: dict[str, int] = {"eddsa": ALG_EDDSA, "ed25519": ALG_ED25519, "es256": ALG_ES256}


class ProgressBar:
    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.last = -1.0

    def __call__(self, received: int, total: int) -> None:
        now = time.monotonic()
        if received < total and now - self.last < 0.2:
            return
        self.last = now
        filled = BAR_WIDTH * received // max(total, 1)
        percent = 100 * received // max(total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        end = "\n" if received >= total else ""
        self.stream.write(f"\rdownloading [{bar}] {percent:3d}% {received}/{total} B{end}")
        self.stream.flush()


def _read(path: str, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path} does not exist") from exc
    except OSError as exc:
        raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise DecodeError(f"{path} is larger than {max_bytes} bytes")
    return data


def _installer(
    args: argparse.Namespace, *, progress: bool = False, image: pathlib.Path | None = None
) -> Installer:
    # lazy: the installer's drivers (http, bootloader, hawkBit) are half of what --help paid
    from drivers.upgrade.filesource import FileImageSource
    from drivers.upgrade.service import build_installer

    cfg = load_config(args)
    installer, _ = build_installer(
        cfg,
        on_progress=ProgressBar() if progress else None,
        source=FileImageSource(image) if image is not None else None,
    )
    return installer


def _envelope(args: argparse.Namespace, installer: Installer) -> bytes:
    from drivers.upgrade.http import fetch_bounded, http_options  # lazy: --help stays light

    limit = installer.settings.max_manifest_bytes
    source = args.manifest or installer.settings.manifest_url
    if not source:
        raise DecodeError("give --manifest FILE|URL or set upgrade.manifest_url")
    if source.startswith(("http://", "https://")):
        return fetch_bounded(source, limit, options=http_options(installer.settings))
    return _read(source, limit)


def _check(args: argparse.Namespace) -> int:
    installer = _installer(args)
    manifest = installer.verify(_envelope(args, installer)).manifest
    if args.json:
        print_json({
            "installable": True,
            "sequence": manifest.sequence,
            "software_version": manifest.software_version or None,
            "image_size": manifest.image_size,
            "image_digest": manifest.image_digest.hex() if manifest.image_digest else None,
            "uri": manifest.uri,
            "expires_at": manifest.expires_at,
        })
        return 0
    print(
        f"installable: sequence {manifest.sequence}, version {manifest.software_version or '-'}, "
        f"{manifest.image_size} bytes from {manifest.uri}"
    )
    return 0


def _apply(args: argparse.Namespace) -> int:
    image = pathlib.Path(args.image) if args.image else None
    if image is not None:
        if not args.manifest:
            raise DecodeError("--image needs its signed envelope: --file ENVELOPE")
        if not image.is_file():
            raise NotFoundError(f"image file {image} does not exist")
    from agent.upgrade.machine import State  # lazy: --help stays light

    installer = _installer(args, progress=True, image=image)
    installer.bar_failed_images = image is None
    if image is not None and installer.record().state == State.DOWNLOADING:
        # Resuming from the file is fine only for the very release being downloaded.
        envelope = _envelope(args, installer)
        if bytes.fromhex(installer.record().envelope_hex) != envelope:
            raise PolicyError(
                f"sequence {installer.record().sequence} is being downloaded; "
                "let it finish or fail before installing another from a file"
            )
    installer.clean_up()  # what killed writes left, as the daemon does at start
    record, _ = installer.resume()
    if not record.busy:
        record = installer.install(_envelope(args, installer), force=args.force)
    if args.json:
        print_json({"state": record.state.value, "sequence": record.sequence,
                    "version": record.version or None, "target_slot": record.target_slot})
        return 0
    print(f"upgrade {record.state.value}: sequence {record.sequence} in slot {record.target_slot}")
    return 0


def _status(args: argparse.Namespace) -> int:
    print(json.dumps(_installer(args).status(), indent=2, sort_keys=True))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # lazy: heavy (cryptography)

    from agent.upgrade.builder import private_key_pem, public_key_pem  # lazy: --help stays light
    from agent.upgrade.keys import key_from_bytes

    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if args.algorithm == "es256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    out = pathlib.Path(args.out)
    write_atomic(out, private_key_pem(key))
    pub = pathlib.Path(args.public) if args.public else out.with_suffix(".pub.pem")
    write_atomic(pub, public_key_pem(key))
    pub.chmod(0o644)
    kid = key_from_bytes(public_key_pem(key)).key_id.hex()
    if args.json:
        print_json({"private_key_file": str(out), "public_key_file": str(pub), "kid": kid,
                    "algorithm": args.algorithm})
        return 0
    print(f"private key {out}, public key {pub}, key id {kid}")
    return 0


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise DecodeError(f"{what} {text[:40]!r} is not a UUID") from exc


def _image_digest(path: str) -> tuple[bytes, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise NotFoundError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    return digest.digest(), size


def _sign(args: argparse.Namespace) -> int:
    from agent.upgrade.builder import (  # lazy: --help stays light
        ManifestSpec,
        build_manifest,
        class_uuid,
        load_private_key,
        sign_envelope,
        vendor_uuid,
    )
    from agent.upgrade.keys import key_from_bytes

    vendor = (
        _uuid(args.vendor_id, "vendor id") if args.vendor_id else vendor_uuid(args.vendor_domain)
    )
    if args.class_id:
        klass = _uuid(args.class_id, "class id")
    elif args.hardware_class:
        klass = class_uuid(vendor, args.hardware_class)
    else:
        raise DecodeError("give --class-id UUID or --hardware-class NAME")
    if not 0 <= args.sequence < 2**63:
        raise DecodeError("--sequence must be a non-negative integer")
    digest, size = _image_digest(args.image)
    precursor = _image_digest(args.precursor)[0] if args.precursor else None
    spec = ManifestSpec(
        sequence=args.sequence,
        vendor_id=vendor,
        class_id=klass,
        image_digest=digest,
        image_size=size,
        uri=args.uri,
        software_version=args.version,
        expires_at=args.expires,
        precursor_digest=precursor,
        new_keys=tuple(key_from_bytes(_read(p, 16384)).spki_der for p in args.new_key),
    )
    signers = [load_private_key(_read(p, 16384)) for p in args.key]
    algorithm = SIGN_ALGORITHMS[args.alg] if args.alg else None
    envelope = sign_envelope(build_manifest(spec), signers, algorithm=algorithm)
    write_atomic(pathlib.Path(args.out), envelope)
    if args.json:
        print_json({"file": args.out, "sequence": args.sequence, "image_size": size,
                    "image_digest": digest.hex(), "class_id": str(klass),
                    "vendor_id": str(vendor), "bytes": len(envelope)})
        return 0
    print(f"{args.out}: sequence {args.sequence}, {size} bytes, class {klass}", file=sys.stderr)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("upgrade", help="signed A/B upgrades")
    sub = parser.add_subparsers(dest="upgrade_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="verify a manifest against keys and policy")
    add_json_option(check)
    apply = sub.add_parser("apply", help="download and install into the inactive slot")
    add_json_option(apply)
    status = sub.add_parser("status", help="print the upgrade state")
    status.add_argument("--json", action="store_true",
                        help="accepted for symmetry: the state is always JSON")
    for p in (check, apply, status):
        _common(p)
    for p in (check, apply):
        p.add_argument(
            "--manifest", "--file", dest="manifest", default=None, help="envelope file or URL"
        )
    apply.add_argument(
        "--image", default=None, help="install this image file (offline) instead of its URI"
    )
    apply.add_argument(
        "--force", action="store_true", help="install a release that failed here before"
    )
    check.set_defaults(func=_check)
    apply.set_defaults(func=_apply)
    status.set_defaults(func=_status)
    keygen = sub.add_parser("keygen", help="create a manifest signing key pair")
    keygen.add_argument("--out", required=True, help="private key file (never overwritten)")
    keygen.add_argument("--public", default=None, help="also write the public key here")
    keygen.add_argument("--algorithm", choices=("ed25519", "es256"), default="ed25519",
                        help="signature algorithm (default ed25519)")
    add_json_option(keygen)
    keygen.set_defaults(func=_keygen)
    sign = sub.add_parser("sign", help="build and sign a manifest for an image")
    sign.add_argument("--key", action="append", required=True, help="signing key (repeatable)")
    sign.add_argument("--image", required=True, help="the image file to sign")
    sign.add_argument("--sequence", type=int, required=True,
                      help="manifest sequence number (must rise)")
    sign.add_argument("--uri", required=True, help="where devices fetch the image")
    sign.add_argument("--class-id", default=None, help="device class id (UUID)")
    sign.add_argument("--hardware-class", default=None, help="hardware class name")
    sign.add_argument("--vendor-id", default=None, help="vendor id (UUID)")
    sign.add_argument("--vendor-domain", default="edge-agent.example",
                      help="vendor domain the ids derive from")
    sign.add_argument("--version", default="", help="version text of the image")
    sign.add_argument("--expires", type=int, default=None, help="expiry, epoch seconds")
    sign.add_argument("--precursor", default=None, help="image a delta applies to")
    sign.add_argument("--new-key", action="append", default=[], help="rotate to this public key")
    sign.add_argument(
        "--alg",
        type=str.lower,
        choices=tuple(SIGN_ALGORITHMS),
        default=None,
        help="COSE algorithm: for an Ed25519 key EdDSA (-8, the default, read by every COSE "
        "library) or Ed25519 (-19, fully specified); ES256 (-7) for a P-256 key",
    )
    sign.add_argument("--out", required=True, help="the signed manifest file")
    add_json_option(sign)
    sign.set_defaults(func=_sign)
