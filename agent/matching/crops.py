"""Enrolment face crops the owner chose to keep (``matching.keep_enrolment_crops``).

Kept only so that a change of embedder can re-embed everyone
(``edge-agent gallery reembed``) instead of asking them to enrol again; off by
default (minimum necessary data: the vectors alone are enough to match).

One file per identity in the gallery directory, ``crops-<number>.bin``, sealed
under the ``face_recognition`` data key like every other gallery file
(:class:`agent.matching.gallery_manifest.Sealer`), written crash-safely.  The
gallery's erasure shreds the whole directory (and consent withdrawal destroys
the key first); removing an identity shreds its file.  Each crop is the
encoded image (JPEG, made by the drivers) of the face with a margin, and the
face's box inside it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import struct

from agent.atomicfile import shred, write_atomic
from agent.errors import DecodeError, DeviceIOError
from agent.matching.gallery_manifest import HEADER_PROBE_BYTES, Sealer

CROPS_CONTEXT = b"gallery:crops"
MAX_CROPS_FILE_BYTES = 512 * 1024 * 1024
_CROPS_FILE = re.compile(r"crops-(\d+)\.bin")
_LENGTH = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class EnrolmentCrop:
    """An encoded face image with a margin and the face's box (x, y, w, h) inside it."""

    image: bytes
    box: tuple[int, int, int, int]


def encode_crops(crops: list[EnrolmentCrop]) -> bytes:
    parts = []
    for crop in crops:
        meta = json.dumps({"box": list(crop.box)}).encode()
        parts += [_LENGTH.pack(len(meta)), meta, _LENGTH.pack(len(crop.image)), crop.image]
    return b"".join(parts)


def decode_crops(plain: bytes) -> list[EnrolmentCrop]:
    crops: list[EnrolmentCrop] = []
    offset = 0
    try:
        while offset < len(plain):
            fields = []
            for _ in range(2):
                (size,) = _LENGTH.unpack_from(plain, offset)
                offset += _LENGTH.size
                if offset + size > len(plain):
                    raise DecodeError("enrolment crops file is truncated")
                fields.append(plain[offset : offset + size])
                offset += size
            x, y, w, h = (int(v) for v in json.loads(fields[0])["box"])
            crops.append(EnrolmentCrop(fields[1], (x, y, w, h)))
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"enrolment crops file is corrupt: {exc}") from exc
    return crops


class CropFiles:
    """The kept crops of a gallery directory, one sealed file per identity number."""

    def __init__(self, directory: pathlib.Path, sealer: Sealer) -> None:
        self.directory = directory
        self.sealer = sealer

    def path(self, number: int) -> pathlib.Path:
        return self.directory / f"crops-{number}.bin"

    def numbers(self) -> set[int]:
        """Identity numbers that have a crops file."""
        try:
            names = [p.name for p in self.directory.iterdir()]
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise DeviceIOError(f"cannot list {self.directory}: {exc.strerror or exc}") from exc
        return {int(m.group(1)) for m in map(_CROPS_FILE.fullmatch, names) if m is not None}

    def _raw(self, path: pathlib.Path) -> bytes | None:
        try:
            if path.stat().st_size > MAX_CROPS_FILE_BYTES:
                raise DecodeError(f"{path.name} is larger than {MAX_CROPS_FILE_BYTES} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DeviceIOError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def read(self, number: int) -> list[EnrolmentCrop]:
        raw = self._raw(self.path(number))
        return [] if raw is None else decode_crops(self.sealer.open(raw, CROPS_CONTEXT))

    def write(self, number: int, crops: list[EnrolmentCrop]) -> None:
        """Replace identity ``number``'s crops (sealed, crash-safe)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(number), self.sealer.seal(encode_crops(crops), CROPS_CONTEXT))

    def remove(self, number: int) -> bool:
        return shred(self.path(number))

    def reseal(self) -> int:
        """Seal every crops file under the newest key; the number of files rewritten."""
        if not self.sealer.sealing:
            return 0
        resealed = 0
        for number in sorted(self.numbers()):
            path = self.path(number)
            raw = self._raw(path)
            if raw is None or not self.sealer.needs_reseal(raw[:HEADER_PROBE_BYTES]):
                continue
            plain = self.sealer.open(raw, CROPS_CONTEXT)
            write_atomic(path, self.sealer.seal(plain, CROPS_CONTEXT))
            resealed += 1
        return resealed
