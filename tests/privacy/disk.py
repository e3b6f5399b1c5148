"""A real ext4 file system on a loop device, and a scan of its raw image.

The state directory of the agent under test lives on a small sparse image,
formatted with ``mkfs.ext4``, attached with ``losetup`` and mounted; after the
agent stopped and the file system is unmounted, the whole image -- live files,
free blocks, the journal, inode tables -- is read back and searched.

Nothing here knows how the agent stores anything: a marker is a string (or a
byte string) and it is found in any block in any of the encodings a program
might have written it in.  A hit is then located with ``debugfs`` on the
unmounted image (which file, the journal, or a block no longer in use), so a
failure says where the residue lives.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

BLOCK = 4096
IMAGE_BYTES = 64 * 1024 * 1024
MAX_HITS_PER_FORM = 8
MAX_JPEG_BYTES = 4 * 1024 * 1024
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
# What losetup/mount say when this machine (a container, a non-root user) has no
# loop devices to give: only then is the test skipped.
UNAVAILABLE = re.compile(
    r"permission denied|operation not permitted|no such device|no such file|"
    r"could not find any free loop device|cannot find an unused loop device|"
    r"failed to set up loop device|only root",
    re.IGNORECASE,
)


class LoopUnavailable(Exception):
    """Loop devices cannot be used here (the reason is the message)."""


def tool(name: str) -> str:
    """The path of a system tool, also where /usr/sbin is not on the PATH (a non-root shell)."""
    found = shutil.which(name) or next(
        (str(p) for p in (pathlib.Path("/usr/sbin", name), pathlib.Path("/sbin", name))
         if p.is_file()), None)
    if found is None:
        package = "e2fsprogs" if name in ("mkfs.ext4", "debugfs", "dumpe2fs") else "mount"
        raise RuntimeError(f"{name} is not installed: `make test` installs {package} (apt-get)")
    return found


def _run(argv: Sequence[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [tool(argv[0]), *argv[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class LoopDisk:
    """A fresh ext4 image on a loop device, mounted at ``mount``."""

    def __init__(self, workdir: pathlib.Path, size: int = IMAGE_BYTES) -> None:
        self.image = workdir / "disk.img"
        self.mount = pathlib.Path(tempfile.mkdtemp(prefix="raw-disk-mnt-"))
        self.device: str | None = None
        self.mounted = False
        with open(self.image, "wb") as fh:
            fh.truncate(size)  # sparse: every block reads as zeros until written
        # 4 KiB blocks, whatever the size (mkfs would pick 1 KiB for a small image).
        # Inode tables and journal written now, not by a kernel thread while the test runs.
        done = _run(["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-E",
                     "lazy_itable_init=0,lazy_journal_init=0", str(self.image)])
        if done.returncode != 0:
            raise RuntimeError(f"mkfs.ext4 failed: {done.stderr.strip()}")

    def attach(self) -> None:
        if os.geteuid() != 0:
            raise LoopUnavailable("setting up a loop device needs root (CI runs the tests as root)")
        done = _run(["losetup", "--find", "--show", str(self.image)])
        if done.returncode != 0:
            if UNAVAILABLE.search(done.stderr):
                raise LoopUnavailable(f"losetup: {done.stderr.strip()}")
            raise RuntimeError(f"losetup failed: {done.stderr.strip()}")
        self.device = done.stdout.strip()
        done = _run(["mount", "-t", "ext4", self.device, str(self.mount)])
        if done.returncode != 0:
            self.detach()
            if UNAVAILABLE.search(done.stderr):
                raise LoopUnavailable(f"mount: {done.stderr.strip()}")
            raise RuntimeError(f"mount failed: {done.stderr.strip()}")
        self.mounted = True

    def write_file(self, relative: str, data: bytes, *, then_delete: bool = False) -> None:
        """A file on the mounted file system, fsync'd (and unlinked, if asked)."""
        path = self.mount / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if then_delete:
            path.unlink()

    def unmount(self) -> None:
        """Unmount (every dirty block reaches the image) and detach the loop device."""
        if self.mounted:
            done = _run(["umount", str(self.mount)])
            if done.returncode != 0:
                raise RuntimeError(f"umount failed (a process still uses the file system?): "
                                   f"{done.stderr.strip()}")
            self.mounted = False
        self.detach()
        # A process that entered a new mount namespace while the disk was mounted (ip
        # netns exec, unshare) keeps the file system alive there: our umount then only
        # drops our view, the journal is never checkpointed and the image is not final.
        done = _run(["dumpe2fs", "-h", str(self.image)])
        if "needs_recovery" in done.stdout:
            raise RuntimeError(
                "the image was not cleanly unmounted: another mount namespace still holds "
                "the file system (a process started while it was mounted), so a scan of "
                "the image would not see its final state"
            )

    def detach(self) -> None:
        if self.device is not None:
            _run(["losetup", "-d", self.device])
            self.device = None

    def cleanup(self) -> None:
        """Teardown, even after a failure: lazy unmount if a process still holds it."""
        if self.mounted:
            done = _run(["umount", str(self.mount)])
            if done.returncode != 0:
                _run(["umount", "-l", str(self.mount)])
            self.mounted = False
        self.detach()
        with contextlib.suppress(OSError):
            self.mount.rmdir()
        with contextlib.suppress(OSError):
            self.image.unlink()

    def read_image(self) -> bytes:
        assert not self.mounted, "unmount first: the page cache may hold blocks not yet written"
        return self.image.read_bytes()


# --- the forms a marker may take -------------------------------------------------------


def _base64_runs(raw: bytes) -> dict[str, bytes]:
    """The base64 characters that depend on ``raw`` alone, at each of the 3 alignments.

    A string encoded inside a larger base64 text starts at offset 0, 1 or 2 of a
    3-byte group; each alignment gives a different text, of which only the
    characters whose 6 bits all come from ``raw`` are fixed.
    """
    forms: dict[str, bytes] = {}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        first = -(-8 * pad // 6)  # ceil: the first character with no pad bit
        last = 8 * (pad + len(raw)) // 6  # exclusive: characters with no bit past raw
        run = encoded[first:last]
        forms[f"base64@{pad}"] = run
        forms[f"base64url@{pad}"] = run.replace(b"+", b"-").replace(b"/", b"_")
    return forms


def text_forms(marker: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """``(caseless, exact)``: forms compared ignoring ASCII case, and forms compared exactly."""
    caseless: dict[str, bytes] = {}
    for case, text in (("", marker), ("lower ", marker.lower()), ("upper ", marker.upper())):
        caseless[f"{case}utf-8"] = text.encode("utf-8")
        caseless[f"{case}utf-16-le"] = text.encode("utf-16-le")
        caseless[f"{case}url-encoded"] = urllib.parse.quote(text, safe="").encode()
        caseless[f"{case}form-encoded"] = urllib.parse.quote_plus(text, safe="").encode()
        caseless[f"{case}json-escaped"] = text.encode("ascii", "backslashreplace").replace(
            b"\\x", b"\\u00"
        )
        caseless[f"{case}hex"] = text.encode("utf-8").hex().encode()
    exact: dict[str, bytes] = {}
    for case, text in (("", marker), ("lower ", marker.lower()), ("upper ", marker.upper())):
        for name, form in _base64_runs(text.encode("utf-8")).items():
            exact[f"{case}{name}"] = form
    return caseless, exact


@dataclasses.dataclass(frozen=True)
class Hit:
    marker: str  # the marker's name in the test
    form: str
    offset: int  # in the image

    @property
    def block(self) -> int:
        return self.offset // BLOCK


@dataclasses.dataclass(frozen=True)
class Jpeg:
    """A JPEG on the image: decoded whole, or only its header (the rest elsewhere or gone)."""

    offset: int
    size: int  # bytes decoded; 0 for a header alone
    width: int
    height: int
    head: bytes  # the first bytes, enough to tell a control image by its comment

    @property
    def block(self) -> int:
        return self.offset // BLOCK

    @property
    def decodable(self) -> bool:
        return self.size > 0

    def tagged(self, tag: bytes) -> bool:
        return tag in self.head


def nonzero_runs(image: bytes) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of each run of blocks that are not all zeros (most of a sparse image)."""
    blocks = np.frombuffer(image, dtype=np.uint64).reshape(-1, BLOCK // 8)
    used = np.concatenate(([False], blocks.any(axis=1), [False]))
    edges = np.flatnonzero(np.diff(used.astype(np.int8)))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        yield int(start) * BLOCK, image[int(start) * BLOCK : int(stop) * BLOCK]


def _find_all(data: bytes, needle: bytes, limit: int) -> list[int]:
    found: list[int] = []
    at = data.find(needle)
    while at >= 0 and len(found) < limit:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def find_markers(
    image: bytes,
    texts: Mapping[str, str],
    binaries: Mapping[str, bytes] | None = None,
) -> list[Hit]:
    """Every place a text marker (in any form) or a binary marker appears in ``image``."""
    binaries = binaries or {}
    plans: list[tuple[str, str, bytes, bool]] = []  # (marker, form, needle, caseless)
    for name, text in texts.items():
        folded, exact = text_forms(text)
        seen: set[bytes] = set()
        for form, needle in folded.items():
            if needle.lower() not in seen:
                seen.add(needle.lower())
                plans.append((name, form, needle.lower(), True))
        for form, needle in exact.items():
            if needle not in seen:
                seen.add(needle)
                plans.append((name, form, needle, False))
    for name, raw in binaries.items():
        plans.append((name, "bytes", raw, False))
    hits: list[Hit] = []
    for offset, run in nonzero_runs(image):
        lowered = run.lower()
        for name, form, needle, ignore_case in plans:
            for at in _find_all(lowered if ignore_case else run, needle, MAX_HITS_PER_FORM):
                hits.append(Hit(name, form, offset + at))
    return hits


# Marker types that may follow the first segment of a JPEG header.
_SEGMENTS = frozenset(
    {*range(0xC0, 0xC8), *range(0xC9, 0xD0), 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE}
)
_DQT_LENGTHS = frozenset({67, 132, 197, 262})  # 1..4 tables of 64 eight-bit entries


def jpeg_header_at(data: bytes, start: int) -> bool:
    """Whether a JPEG header starts at ``start``: SOI, then two well-formed segments.

    The first is APP0 ``JFIF``, APP1 ``Exif`` or a quantisation table, as every
    encoder writes; random bytes (encrypted data) pass this about once in 2^80.
    """
    pos = start + 2
    for seen in range(2):
        if pos + 9 > len(data) or data[pos] != 0xFF:
            return False
        kind, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return False
        if seen == 0:
            body = data[pos + 4 : pos + 9]
            if not ((kind == 0xE0 and body == b"JFIF\0") or (kind == 0xE1 and body == b"Exif\0")
                    or (kind == 0xDB and length in _DQT_LENGTHS)):
                return False
        elif kind not in _SEGMENTS:
            return False
        pos += 2 + length
    return True


def carve_jpegs(image: bytes) -> list[Jpeg]:
    """Every JPEG header on the image, decoded where its bytes run on to an end marker.

    A JPEG whose bytes are split (SQLite overflow pages, WAL frames, fragmented
    files) shows as a header alone: still the start of a planted image.
    """
    found: list[Jpeg] = []
    for offset, run in nonzero_runs(image):
        start = run.find(JPEG_SOI)
        while start >= 0:
            if jpeg_header_at(run, start):
                decoded = _decode_from(run, start)
                if decoded is None:  # only the header: no contiguous run to an end marker
                    decoded = Jpeg(start, 0, 0, 0, run[start : start + 128])
                found.append(dataclasses.replace(decoded, offset=offset + start))
            start = run.find(JPEG_SOI, start + 1)
    return found


def _decode_from(run: bytes, start: int) -> Jpeg | None:
    """The first candidate ending at one of the next few FFD9 markers that OpenCV decodes."""
    end = run.find(JPEG_EOI, start + 3)
    for _ in range(8):
        if end < 0 or end - start > MAX_JPEG_BYTES:
            return None
        data = run[start : end + 2]
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is not None and image.shape[0] >= 8 and image.shape[1] >= 8:
            return Jpeg(start, len(data), int(image.shape[1]), int(image.shape[0]), data[:128])
        end = run.find(JPEG_EOI, end + 2)
    return None


# --- where a block is ----------------------------------------------------------------------


def locate(image_path: pathlib.Path, blocks: Iterable[int]) -> dict[int, str]:
    """For each block: the file that owns it, ``journal``, metadata, or ``free block``."""
    wanted = sorted(set(blocks))
    if not wanted:
        return {}
    where: dict[int, str] = {}
    owners: dict[int, int] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("".join(f"testb {b}\n" for b in wanted))
        script.write("icheck " + " ".join(str(b) for b in wanted) + "\n")
        script.flush()
        done = _run(["debugfs", "-f", script.name, str(image_path)])
    for line in done.stdout.splitlines():
        used = re.match(r"Block (\d+) (marked in use|not in use)", line)
        if used:
            where[int(used[1])] = "in use" if used[2] == "marked in use" else "free block"
            continue
        owner = re.match(r"(\d+)\s+(\d+)$", line.strip())
        if owner:
            owners[int(owner[1])] = int(owner[2])
    paths = _inode_paths(image_path, set(owners.values()))
    for block, inode in owners.items():
        if where.get(block) == "free block":
            continue
        where[block] = paths.get(inode, f"inode {inode}")
    for block in wanted:
        if where.get(block) == "in use":
            where[block] = "file-system metadata (inode table, bitmap or directory)"
    return where


def _inode_paths(image_path: pathlib.Path, inodes: set[int]) -> dict[int, str]:
    special = {8: "the ext4 journal"}
    paths = {i: special[i] for i in inodes if i in special}
    rest = sorted(i for i in inodes if i not in special)
    if rest:
        done = _run(["debugfs", "-R", "ncheck " + " ".join(map(str, rest)), str(image_path)])
        for line in done.stdout.splitlines():
            found = re.match(r"(\d+)\s+(\S.*)$", line.strip())
            if found:
                paths[int(found[1])] = found[2]
    return paths


def _context(image: bytes, offset: int, before: int = 32, after: int = 96) -> str:
    """The bytes around ``offset``, printable ones as they are, for a failure message."""
    raw = image[max(0, offset - before) : offset + after]
    return "".join(chr(b) if 32 <= b < 127 else "." for b in raw)


def describe(
    image_path: pathlib.Path, hits: Sequence[Hit], jpegs: Sequence[Jpeg] = (),
    image: bytes | None = None,
) -> str:
    """One line per (marker, place): what was found where, for a failure message."""
    where = locate(image_path, [h.block for h in hits] + [j.block for j in jpegs])
    forms: dict[str, set[str]] = {}
    sample: dict[str, Hit] = {}
    for hit in hits:
        place = f"{hit.marker} @ {where.get(hit.block, '?')}"
        forms.setdefault(place, set()).add(hit.form)
        sample.setdefault(place, hit)
    out = []
    for place in sorted(forms):
        hit = sample[place]
        context = f" -- e.g. block {hit.block}: {_context(image, hit.offset)!r}" if image else ""
        out.append(f"  {place}: {', '.join(sorted(forms[place]))}{context}")
    for jpeg in jpegs:
        what = (f"decodable JPEG {jpeg.width}x{jpeg.height} ({jpeg.size} bytes)"
                if jpeg.decodable else "JPEG header (the rest not contiguous)")
        out.append(f"  {what} @ {where.get(jpeg.block, '?')} (block {jpeg.block})")
    return "\n".join(out)


# --- a scan with its controls ------------------------------------------------------------

CONTROL_TEXT = "raw-disk-scan-control-5821"
CONTROL_DELETED = "raw-disk-freed-control-9043"
CONTROL_TAG = b"raw-disk-scan-control-jpeg"


def control_jpeg() -> bytes:
    """A small JPEG with a comment segment that tells it apart from anything the agent wrote."""
    picture = np.zeros((48, 64, 3), np.uint8)
    cv2.rectangle(picture, (8, 8), (40, 40), (0, 200, 255), -1)
    ok, encoded = cv2.imencode(".jpg", picture)
    assert ok
    data = encoded.tobytes()
    app0_end = 4 + int.from_bytes(data[4:6], "big")  # SOI (2) + APP0 marker (2) + its length
    comment = b"\xff\xfe" + (len(CONTROL_TAG) + 2).to_bytes(2, "big") + CONTROL_TAG
    return data[:app0_end] + comment + data[app0_end:]


@dataclasses.dataclass
class Scan:
    image: pathlib.Path
    hits: list[Hit]
    jpegs: list[Jpeg]
    data: bytes = dataclasses.field(repr=False, default=b"")

    def residue(self) -> list[Hit]:
        return [h for h in self.hits if not h.marker.startswith("control")]

    def planted_jpegs(self) -> list[Jpeg]:
        return [j for j in self.jpegs if not j.tagged(CONTROL_TAG)]

    def report(self, hits: Sequence[Hit], jpegs: Sequence[Jpeg] = ()) -> str:
        return describe(self.image, hits, jpegs, self.data)


def scan(
    disk: LoopDisk, texts: Mapping[str, str], binaries: Mapping[str, bytes] | None = None
) -> Scan:
    """Write the controls, unmount, and search the whole image.

    The controls prove the scan can fail: a marker in a live file, one in a file
    deleted before unmounting (a free block), and a JPEG in a live file must all
    be found, or the scan itself is broken.
    """
    disk.write_file("scan-control/live.bin", f"live {CONTROL_TEXT}\n".encode() + control_jpeg())
    disk.write_file("scan-control/deleted.txt", f"freed {CONTROL_DELETED}\n".encode() * 64,
                    then_delete=True)
    disk.unmount()
    image = disk.read_image()
    controls = {"control live": CONTROL_TEXT, "control freed": CONTROL_DELETED}
    result = Scan(disk.image, find_markers(image, {**controls, **texts}, binaries),
                  carve_jpegs(image), image)
    found = {h.marker for h in result.hits}
    assert found >= set(controls), f"the scan missed its controls: found only {found}"
    freed = locate(disk.image, [h.block for h in result.hits if h.marker == "control freed"])
    assert "free block" in freed.values(), f"the freed control is not in a free block: {freed}"
    live = locate(disk.image, [h.block for h in result.hits if h.marker == "control live"])
    assert "/scan-control/live.bin" in live.values(), f"the live control was not located: {live}"
    assert any(j.tagged(CONTROL_TAG) and j.decodable for j in result.jpegs), result.jpegs
    return result
