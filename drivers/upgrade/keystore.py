"""The trusted manifest key set: initial PEM files plus persisted rotations."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

from agent.atomicfile import read_optional, write_atomic
from agent.errors import ConfigError, DecodeError
from agent.upgrade.keys import KeySet, TrustedKey, key_from_bytes
from agent.upgrade.settings import SignatureAlgorithm

MAX_KEY_BYTES = 16 * 1024


class KeyStore:
    def __init__(
        self,
        initial: Iterable[pathlib.Path],
        rotated_path: pathlib.Path,
        algorithms: Iterable[SignatureAlgorithm],
    ) -> None:
        self.initial = tuple(initial)
        self.rotated_path = rotated_path
        self.algorithms = tuple(algorithms)

    def _initial_keys(self) -> list[TrustedKey]:
        keys = []
        for path in self.initial:
            raw = read_optional(path, MAX_KEY_BYTES)
            if raw is None:
                raise ConfigError("upgrade.trusted_keys", f"{path} does not exist")
            keys.append(key_from_bytes(raw))
        return keys

    def rotation_sequence(self) -> int:
        raw = read_optional(self.rotated_path, MAX_KEY_BYTES * 8)
        if raw is None:
            return -1
        return int(self._parse(raw)[0])

    @staticmethod
    def _parse(raw: bytes) -> tuple[int, list[TrustedKey]]:
        try:
            data = json.loads(raw)
            sequence = int(data["sequence"])
            keys = [key_from_bytes(bytes.fromhex(k)) for k in data["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"rotated key file is unreadable: {exc}") from exc
        return sequence, keys

    def load(self) -> KeySet:
        raw = read_optional(self.rotated_path, MAX_KEY_BYTES * 8)
        keys = self._initial_keys() if raw is None else self._parse(raw)[1]
        return KeySet.from_keys(keys, self.algorithms)

    def rotate(self, keys: KeySet, sequence: int) -> bool:
        """Persist ``keys`` as the trusted set if ``sequence`` is newer than the last rotation."""
        if sequence <= self.rotation_sequence():
            return False
        body = {"sequence": sequence, "keys": [k.spki_der.hex() for k in keys.keys]}
        write_atomic(self.rotated_path, json.dumps(body).encode())
        return True
