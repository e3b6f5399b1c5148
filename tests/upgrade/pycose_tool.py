"""Run by ANOTHER interpreter (a venv with pycose 1.1.0): an independent COSE implementation.

Reads one JSON request on stdin, writes one JSON reply on stdout.  Imports
nothing from this project: the envelopes it makes and the verdicts it gives
come from pycose (COSE) and cbor2 (CBOR) alone.

    {"op": "keygen", "kty": "OKP"|"EC2"}
        -> {"key": {...}, "public": {"kty", "x", "y"?}}   (hex coordinates)
    {"op": "sign", "key": {...}, "alg": "EdDSA"|"ES256", "manifest": hex,
     "kid": hex|null, "kid_header": "protected"|"unprotected", "detached": bool}
        -> {"envelope": hex}
    {"op": "verify", "envelope": hex, "public": {...}}
        -> {"results": [true | false | "error: ..."]}   (one per signature)
"""

from __future__ import annotations

import hashlib
import json
import sys

import cbor2
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey, EC2Key, OKPKey
from pycose.keys.curves import P256, Ed25519
from pycose.messages import Sign1Message

ALGORITHMS = {"EdDSA": EdDSA, "ES256": Es256}


def _key(spec: dict[str, str], private: bool = True) -> CoseKey:
    if spec["kty"] == "OKP":
        return OKPKey(
            crv=Ed25519,
            x=bytes.fromhex(spec["x"]),
            d=bytes.fromhex(spec["d"]) if private and "d" in spec else b"",
        )
    return EC2Key(
        crv=P256,
        x=bytes.fromhex(spec["x"]),
        y=bytes.fromhex(spec["y"]),
        d=bytes.fromhex(spec["d"]) if private and "d" in spec else b"",
    )


def keygen(request: dict[str, object]) -> dict[str, object]:
    if request["kty"] == "OKP":
        okp = OKPKey.generate_key(crv=Ed25519)
        key = {"kty": "OKP", "x": okp.x.hex(), "d": okp.d.hex()}
    else:
        ec2 = EC2Key.generate_key(crv=P256)
        key = {"kty": "EC2", "x": ec2.x.hex(), "y": ec2.y.hex(), "d": ec2.d.hex()}
    return {"key": key, "public": {k: v for k, v in key.items() if k != "d"}}


def sign(request: dict[str, object]) -> dict[str, object]:
    manifest = bytes.fromhex(str(request["manifest"]))
    # SUIT_Digest of the bstr-wrapped manifest, as the SUIT draft defines it.
    digest = cbor2.dumps([-16, hashlib.sha256(cbor2.dumps(manifest)).digest()])
    phdr: dict[object, object] = {Algorithm: ALGORITHMS[str(request["alg"])]}
    uhdr: dict[object, object] = {}
    if request.get("kid") is not None:
        target = phdr if request.get("kid_header", "protected") == "protected" else uhdr
        target[KID] = bytes.fromhex(str(request["kid"]))
    detached = bool(request.get("detached", True))
    message = Sign1Message(phdr=phdr, uhdr=uhdr, payload=None if detached else digest)
    spec = request["key"]
    assert isinstance(spec, dict)
    message.key = _key(spec)
    sign1 = message.encode(detached_payload=digest if detached else None)
    auth = cbor2.dumps([digest, sign1])
    envelope = cbor2.dumps(cbor2.CBORTag(107, {2: auth, 3: manifest}))
    return {"envelope": envelope.hex()}


def verify(request: dict[str, object]) -> dict[str, object]:
    envelope = cbor2.loads(bytes.fromhex(str(request["envelope"])))
    auth = cbor2.loads(envelope.value[2])
    spec = request["public"]
    assert isinstance(spec, dict)
    results: list[object] = []
    for raw in auth[1:]:
        try:
            message = Sign1Message.decode(raw)
            message.key = _key(spec, private=False)
            results.append(bool(message.verify_signature(detached_payload=auth[0])))
        except Exception as exc:
            results.append(f"error: {type(exc).__name__}: {exc}")
    return {"results": results}


def main() -> int:
    request = json.load(sys.stdin)
    handler = {"keygen": keygen, "sign": sign, "verify": verify}[request["op"]]
    json.dump(handler(request), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
