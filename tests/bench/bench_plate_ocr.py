"""Plates read from 640x480 camera frames by the shipped PP-OCRv6 models, by plate width.

For each width (70/100/140 px) 40 random plates of the format
``[A-Z]{2}\\d{3}[A-Z]{2}`` are drawn with ``cv2.putText`` on a white plate on a
car in a 640x480 scene, degraded like a camera stream (defocus, noise, JPEG 80),
located and read by the default reader (charset and format restricted), and
matched against a watch-list of those 40 plus 2000 other plates of the format.
Peer: the same models decoded the usual way (the recogniser's whole
dictionary, no format; the text then normalised) in the same run.  "Voted"
reads three frames of the same car (moving, re-rendered) and votes per track
as the service does.
"""

from __future__ import annotations

import random
import time
from typing import Any

import onnxruntime as ort
from rapidfuzz.distance import Levenshtein

from agent.errors import DecodeError
from agent.matching.plates import (
    MatchPolicy,
    PlateEntry,
    PlateList,
    PlateWatchlist,
    normalise_plate,
)
from agent.matching.plates_vote import PlateVoter
from drivers.vision import plate_ocr
from drivers.vision.plate_ocr import PpOcrPlateReader
from tests.matching.plate_frames import FORMAT, plate_frame, plate_text

AREA = "plates (camera frames)"
WIDTHS = (70, 100, 140)
PLATES = 40
DISTRACTORS = 2000
CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _dictionary() -> str:
    session = ort.InferenceSession(str(plate_ocr.models_dir() / plate_ocr.RECOGNISER))
    chars = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    return "".join(dict.fromkeys(c for c in chars if len(c) == 1))


def _normalised(text: str) -> str | None:
    try:
        return normalise_plate("".join(c for c in text if c.isalnum()))
    except DecodeError:
        return None


def _top(watchlist: PlateWatchlist, text: str | None) -> str | None:
    if not text:
        return None
    found = watchlist.match(text)
    return found[0].entry.plate if found else None


def run(report: Any) -> None:
    ours = PpOcrPlateReader(charset=CHARSET, formats=(FORMAT,))
    peer = PpOcrPlateReader(charset=_dictionary(), min_chars=1, max_chars=64, min_confidence=0.0)
    rng = random.Random(20261201)
    for width in WIDTHS:
        truth = list(dict.fromkeys(plate_text(rng) for _ in range(PLATES)))
        others = {plate_text(rng) for _ in range(DISTRACTORS)} - set(truth)
        watchlist = PlateWatchlist(
            [PlateEntry(p, PlateList.DENY) for p in (*truth, *others)], MatchPolicy()
        )
        stats = {"ours": [0.0, 0, 0], "peer": [0.0, 0, 0]}  # char accuracy, hits, wrong
        voted_hits = voted_wrong = 0
        seconds = 0.0
        for index, plate in enumerate(truth):
            seed = width * 1000 + index
            x = 200 + rng.randrange(0, 120)
            frame = plate_frame(plate, width, seed=seed, x=x)
            start = time.perf_counter()
            found = ours.locate(frame)
            seconds += time.perf_counter() - start
            peer_found = peer.locate(frame)
            for name, texts in (
                ("ours", [f.reading.text for f in found]),
                ("peer", [_normalised(f.reading.text) for f in peer_found]),
            ):
                read = max(texts, key=lambda t: -Levenshtein.distance(t or "", plate), default="")
                stats[name][0] += max(0.0, 1 - Levenshtein.distance(read or "", plate) / len(plate))
                tops = {_top(watchlist, t) for t in texts} - {None}
                stats[name][1] += plate in tops
                stats[name][2] += bool(tops - {plate})
            voter = PlateVoter(vote_frames=2)
            decided: list[str] = []
            for step in range(3):
                moved = plate_frame(plate, width, seed=seed + 7 * step, x=x + 4 * step)
                decided += voter.add(ours.locate(moved), 1.0 + step)
            tops = {_top(watchlist, t) for t in decided} - {None}
            voted_hits += plate in tops
            voted_wrong += bool(tops - {plate})
        n = len(truth)
        acc, hits, wrong = stats["ours"]
        pacc, phits, pwrong = stats["peer"]
        report.row(AREA, f"character accuracy, {width} px plates ({n})", f"{acc / n:.3f}",
                   peer=f"{pacc / n:.3f} (whole dictionary)", ratio=acc / pacc if pacc else None)
        goal = ">= 0.9" if width == 100 else ""
        report.row(AREA, f"watch-list hit rate, one frame, {width} px ({n} + {len(others)} listed)",
                   f"{hits / n:.3f} ({wrong} wrong)", peer=f"{phits / n:.3f} ({pwrong} wrong)",
                   ratio=hits / phits if phits else None, goal=goal,
                   met=(hits / n >= 0.9) if width == 100 else None)
        report.row(AREA, f"watch-list hit rate, voted over 3 frames, {width} px",
                   f"{voted_hits / n:.3f} ({voted_wrong} wrong)", goal=goal,
                   met=(voted_hits / n >= 0.9) if width == 100 else None)
        report.row(AREA, f"locate + read, ms per 640x480 frame, {width} px",
                   f"{seconds / n * 1000:.0f} ms (1 thread)")
