"""The raw-image scanner finds what it must, and nothing in random bytes.

A scan that found nothing proves nothing unless it would have found the
residue: here every encoding of a marker, a base64 text at each alignment, a
JPEG and a row deleted from a real SQLite database in WAL mode on a real
loop-mounted ext4 (the way the agent's queue leaves residue) must all be found;
random bytes -- what encrypted data looks like -- must give no JPEG.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import urllib.parse

import cv2
import numpy as np

from tests.privacy.disk import (
    BLOCK,
    JPEG_SOI,
    LoopDisk,
    carve_jpegs,
    control_jpeg,
    find_markers,
    locate,
    scan,
    text_forms,
)

MARKER = "Zoë Quintavalle-Brisk"


def _image_with(chunks: list[bytes]) -> bytes:
    """A zero-filled image with each chunk in a block of its own, at an odd offset."""
    image = bytearray(BLOCK * (2 * len(chunks) + 2))
    for i, chunk in enumerate(chunks):
        at = BLOCK * (2 * i + 1) + 1000 + i
        image[at : at + len(chunk)] = chunk
    return bytes(image)


def test_every_encoding_of_a_marker_is_found() -> None:
    raw = MARKER.encode("utf-8")
    embedded = {
        "utf-8": b"name=" + raw + b";",
        "utf-16-le": MARKER.encode("utf-16-le"),
        "lower utf-8": MARKER.lower().encode(),
        "upper utf-8": MARKER.upper().encode(),
        "mixed case": MARKER.swapcase().encode(),
        "url-encoded": urllib.parse.quote(MARKER).encode(),
        "form-encoded": b"?q=" + urllib.parse.quote_plus(MARKER).encode(),
        "json-escaped": b'{"n": "Zo\\u00eb Quintavalle-Brisk"}',
        "hex": raw.hex().encode(),
    }
    for pad in range(3):  # inside a longer base64 text, at each of the 3 alignments
        embedded[f"base64@{pad}"] = base64.b64encode(b"x" * pad + raw + b"tail")
        embedded[f"base64url@{pad}"] = base64.urlsafe_b64encode(b"\xfb" * pad + raw + b"\xff")
    for what, chunk in embedded.items():
        hits = find_markers(_image_with([chunk]), {"marker": MARKER})
        assert hits, f"the {what} form was not found"
        assert all(h.offset // BLOCK == 1 for h in hits)
    assert find_markers(_image_with([b"Zoe Quintavalle"]), {"marker": MARKER}) == []


def test_binary_markers_are_found_exactly() -> None:
    vector = np.linspace(0.01, 0.5, 16, dtype=np.float32).tobytes()
    hits = find_markers(_image_with([b"\0\1" + vector]), {}, {"template": vector})
    assert [(h.marker, h.form) for h in hits] == [("template", "bytes")]


def test_base64_forms_are_only_the_characters_the_marker_fixes() -> None:
    _, exact = text_forms("abc")
    # "abc" at offset 0 is "YWJj"; at 1 and 2 only the characters with no outside bit.
    assert exact["base64@0"] == b"YWJj"
    for pad in (1, 2):
        encoded = base64.b64encode(b"\xff" * pad + b"abc" + b"\xff\xff")
        assert exact[f"base64@{pad}"] in encoded


def test_a_jpeg_is_found_whole_or_as_a_header() -> None:
    picture = control_jpeg()
    whole = carve_jpegs(_image_with([picture]))
    assert [(j.decodable, j.width, j.height) for j in whole] == [(True, 64, 48)]
    # Cut in the middle (the rest in another page, or overwritten): still a JPEG header.
    cut = carve_jpegs(_image_with([picture[: len(picture) // 2]]))
    assert [(j.decodable, j.offset // BLOCK) for j in cut] == [(False, 1)]


def test_random_bytes_hold_no_jpeg() -> None:
    """Ciphertext is random bytes: no start-of-image marker in it may count as a JPEG."""
    rng = np.random.default_rng(7)
    noise = bytearray(rng.integers(0, 256, size=8 * 1024 * 1024, dtype=np.uint8).tobytes())
    for at in range(0, len(noise), 65_536):  # plenty of start markers followed by noise
        noise[at : at + 3] = JPEG_SOI
    assert carve_jpegs(bytes(noise)) == []


def test_a_row_deleted_from_sqlite_in_wal_mode_is_found_on_the_raw_image(
    disk: LoopDisk,
) -> None:
    """The mechanism of the residue the agent's queue leaves: the scan must see it."""
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)  # noise: a large JPEG
    ok, jpeg = cv2.imencode(".jpg", picture)
    assert ok and len(jpeg) > 3 * BLOCK
    path = disk.mount / "queue.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, label TEXT, img BLOB)")
    db.execute("INSERT INTO q (label, img) VALUES (?, ?)", (MARKER, jpeg.tobytes()))
    db.commit()
    db.execute("DELETE FROM q")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert not os.path.exists(f"{path}-wal")  # the WAL went away, its blocks are free
    result = scan(disk, {"label": MARKER})
    places = locate(result.image, [h.block for h in result.residue()])
    assert result.residue(), "the deleted row's label was not found"
    assert "free block" in places.values() or any("queue.sqlite" in p for p in places.values())
    assert result.planted_jpegs(), "the deleted row's JPEG was not found"
