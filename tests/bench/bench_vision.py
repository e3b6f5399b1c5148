"""Face detection and identification on real photos, default models vs Haar + LBP.

Detectors on the dlib path: BlazeFace full-range (LiteRT) and dlib HOG (upsample
1), each with its own rows; the shipped default (``matching.face_detector``)
carries the goals, and the ``min_face_area`` rows use its boxes.

Photos come from packages at bench time (tests/bench/DATA.md): five face
photos of the face_recognition sdist (Obama in four photos, Biden) and
scikit-image's astronaut (Eileen Collins), plus 18 scikit-image photos with
no face; for the score distributions also the six people of insightface's
group photo and its Tom Hanks portrait (impostors only).  Each face is placed in a 640x480 frame at
80/48/32 px face width (the face's reference box is dlib's MMOD CNN detection
at full resolution) and degraded like a camera stream (defocus, noise, JPEG 80).

Rows: detector recall and false positives, identification rate of second
photos at each embedder's default threshold, identification by face size and
the ``min_face_area`` gate chosen from it, TAR at FAR 1% over all
cross-photo pairs, the score distributions behind the default threshold, the
logistic fit behind each embedder's event confidence (agent.matching.calibration), and
frames/s of each stage at 640x480 with 4 faces.  Peer: Haar + LBP in the same run.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from agent.matching.calibration import fit_logistic
from agent.matching.quality import blur_score
from agent.matching.settings import MatchingSettings
from agent.matching.tracks import Box
from drivers.vision.blazeface import BlazeFaceDetector
from drivers.vision.dlib_faces import DlibEmbedder, HogDetector, MmodDetector
from drivers.vision.faces import HaarDetector, LbpEmbedder, crop, grey
from tests.bench import vision_data
from tests.matching import real_faces
from tests.matching.plate_frames import degrade

AREA = "faces (real photos)"
SIZES = (80, 48, 32)
SEEDS = (1, 2, 3)
FRAME_W, FRAME_H = 640, 480
IDENTITY = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "obama_partial_face.jpg": "obama",
    "biden.jpg": "biden",
    "astronaut.png": "collins",
}
ENROL = {"obama": "obama.jpg", "biden": "biden.jpg", "collins": "astronaut.png"}
PROBES = ("obama2.jpg", "obama3.jpg")  # second photos of an enrolled person
# The shipped default detector carries the goals; the other dlib-path detector gets
# the same rows beside it (BlazeFace full-range and dlib HOG upsample 1).
DEFAULT = MatchingSettings().face_detector.value
DNN_DETECTORS = ("blazeface", "hog")


def _label(det: Any) -> str:
    return f"{det.name}, default" if det.name == DEFAULT else det.name


def _iou(a: Box, b: Box) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a.w * a.h + b.w * b.h - inter)


def _placed(
    image: np.ndarray, ref: Box, face_px: int, seed: int, centre: tuple[int, int] | None = None
) -> tuple[np.ndarray, Box]:
    """``image`` scaled to a ``face_px`` face, the face at ``centre`` of a camera frame."""
    scale = face_px / ref.w
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    cx, cy = centre or (
        FRAME_W // 2 + int(rng.integers(-60, 61)), FRAME_H // 2 + int(rng.integers(-40, 41))
    )
    fx, fy = int((ref.x + ref.w / 2) * scale), int((ref.y + ref.h / 2) * scale)
    frame = np.full((FRAME_H, FRAME_W, 3), 110, np.uint8)
    dx, dy = cx - fx, cy - fy  # where small's origin lands in the frame
    sx0, sy0 = max(0, -dx), max(0, -dy)
    fx0, fy0 = max(0, dx), max(0, dy)
    w = min(small.shape[1] - sx0, FRAME_W - fx0)
    h = min(small.shape[0] - sy0, FRAME_H - fy0)
    frame[fy0 : fy0 + h, fx0 : fx0 + w] = small[sy0 : sy0 + h, sx0 : sx0 + w]
    box = Box(int(ref.x * scale) + dx, int(ref.y * scale) + dy, face_px, int(ref.h * scale), 1.0)
    return degrade(frame, rng), box


def _fit(image: np.ndarray, seed: int) -> np.ndarray:
    """A no-face photo letterboxed into a camera frame."""
    scale = min(FRAME_W / image.shape[1], FRAME_H / image.shape[0])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((FRAME_H, FRAME_W, 3), 110, np.uint8)
    y0, x0 = (FRAME_H - small.shape[0]) // 2, (FRAME_W - small.shape[1]) // 2
    frame[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return degrade(frame, np.random.default_rng(seed))


def _load() -> tuple[dict[str, np.ndarray], dict[str, Box], dict[str, np.ndarray]]:
    faces = {name: real_faces.load(name) for name in real_faces.PHOTOS}
    faces.update(vision_data.photos(vision_data.FACE_PHOTOS))
    mmod = MmodDetector(upsample=0)
    refs: dict[str, Box] = {}
    for name, image in list(faces.items()):
        scale = min(1.0, 1000 / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = sorted(mmod.detect(small), key=lambda b: b.w * b.h, reverse=True)
        if not boxes:
            print(f"   no reference face in {name}: left out", flush=True)
            del faces[name]
            continue
        b = boxes[0]
        refs[name] = Box(int(b.x / scale), int(b.y / scale), int(b.w / scale), int(b.h / scale), 1)
    return faces, refs, vision_data.photos(vision_data.NO_FACE_PHOTOS)


def _time_per_call(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _detection(report: Any, detectors: dict[str, Any], faces: dict[str, np.ndarray],
               refs: dict[str, Box], empty: dict[str, np.ndarray]) -> None:
    for name in DNN_DETECTORS:
        _detection_of(report, detectors[name], detectors["haar"], faces, refs, empty)


def _detection_of(report: Any, ours: Any, peer: Any, faces: dict[str, np.ndarray],
                  refs: dict[str, Box], empty: dict[str, np.ndarray]) -> None:
    default = ours.name == DEFAULT
    for size in SIZES:
        result = {}
        for det in (ours, peer):
            hits = trials = wrong = 0
            for name, seed in itertools.product(faces, SEEDS):
                frame, truth = _placed(faces[name], refs[name], size, seed)
                boxes = det.detect(frame)
                trials += 1
                hits += any(_iou(b, truth) >= 0.3 for b in boxes)
                wrong += sum(_iou(b, truth) < 0.1 for b in boxes)
            result[det.name] = (hits / trials, wrong, trials)
        (r, fp, n), (pr, pfp, _) = result[ours.name], result[peer.name]
        goal = ">= 0.9" if size == 48 and default else ""
        report.row(AREA, f"detector recall, {size} px faces ({n} frames)",
                   f"{r:.2f} ({_label(ours)})",
                   peer=f"{pr:.2f} (haar)", ratio=r / pr if pr else None, goal=goal,
                   met=(r >= 0.9) if goal else None)
        report.row(AREA, f"false positives beside the face, {size} px ({n} frames)",
                   f"{fp} ({ours.name})", peer=f"{pfp}")
    counts = {det.name: sum(len(det.detect(_fit(img, 1))) for img in empty.values())
              for det in (ours, peer)}
    report.row(AREA, f"false positives on {len(empty)} no-face photos",
               f"{counts[ours.name]} ({_label(ours)})", peer=f"{counts['haar']} (haar)",
               goal="<= 1" if default else "", met=counts[ours.name] <= 1 if default else None)


SAMPLE_SIZES = (160, 80, 64, 48, 32)
FLOORS = (80, 64, 48, 32)
GATE_PX = 64  # the calibration counts pairs of faces at least this wide


def _embed_all(embedder: Any, faces: dict[str, np.ndarray], refs: dict[str, Box]
               ) -> list[tuple[str, str, int, np.ndarray]]:
    samples = []
    for name, size, seed in itertools.product(faces, SAMPLE_SIZES, (1, 2, 3, 4)):
        frame, box = _placed(faces[name], refs[name], size, seed)
        samples.append((name, IDENTITY[name], size, embedder.embed(frame, box)))
    return samples


def _pairs(
    samples: list[tuple[str, str, int, np.ndarray]], floor: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of genuine and impostor pairs whose faces are both at least ``floor`` px."""
    genuine, impostor = [], []
    for (n1, i1, s1, v1), (n2, i2, s2, v2) in itertools.combinations(samples, 2):
        if min(s1, s2) < floor:
            continue
        score = float(v1 @ v2)
        if i1 != i2:
            impostor.append(score)
        elif n1 != n2:  # another photo of the same person, never the same photo
            genuine.append(score)
    return np.asarray(genuine), np.asarray(impostor)


def _gallery(det: Any, emb: Any, faces: dict[str, np.ndarray], refs: dict[str, Box]
             ) -> dict[str, np.ndarray]:
    """Each enrolled person's vector, from their enrolment photo with a 160 px face."""
    gallery = {}
    for who, name in ENROL.items():
        frame, truth = _placed(faces[name], refs[name], 160, 0)
        boxes = [b for b in det.detect(frame) if _iou(b, truth) >= 0.3] or [truth]
        gallery[who] = emb.embed(frame, boxes[0])
    return gallery


def _identification(report: Any, detectors: dict[str, Any], embedders: dict[str, Any],
                    faces: dict[str, np.ndarray], refs: dict[str, Box]) -> None:
    rates: dict[str, dict[int, float]] = {}
    pairs = [(detectors[name], embedders["dlib"]) for name in DNN_DETECTORS]
    for det, emb in [*pairs, (detectors["haar"], embedders["lbp"])]:
        gallery = _gallery(det, emb, faces, refs)
        key = f"{det.name}+{emb.name}"
        rates[key] = {}
        for size in SIZES:
            ok = n = 0
            for name, seed in itertools.product(PROBES, SEEDS):
                frame, truth = _placed(faces[name], refs[name], size, seed)
                n += 1
                boxes = [b for b in det.detect(frame) if _iou(b, truth) >= 0.3]
                if not boxes:
                    continue
                probe = emb.embed(frame, boxes[0])
                who, score = max(((w, float(v @ probe)) for w, v in gallery.items()),
                                 key=lambda t: t[1])
                ok += who == "obama" and score >= emb.default_threshold
            rates[key][size] = ok / n
    for name, size in itertools.product(DNN_DETECTORS, SIZES):
        r, pr = rates[f"{name}+dlib"][size], rates["haar+lbp"][size]
        goal = "> 0" if size == 80 and name == DEFAULT else ""
        report.row(AREA, f"second photo identified at the default threshold, {size} px",
                   f"{r:.2f} ({name}+dlib @ {embedders['dlib'].default_threshold})",
                   peer=f"{pr:.2f} (haar+lbp @ {embedders['lbp'].default_threshold})",
                   ratio=r / pr if pr else None, goal=goal, met=(r > 0) if goal else None)


def _more_people() -> tuple[dict[str, np.ndarray], dict[str, Box]]:
    """Seven more people (impostors only): each face of the group photo, and a portrait."""
    mmod = MmodDetector(upsample=1)
    faces: dict[str, np.ndarray] = {}
    refs: dict[str, Box] = {}
    for name, image in vision_data.photos(vision_data.GROUP_PHOTOS).items():
        for k, b in enumerate(mmod.detect(image)):
            # Each face cut out with a margin, so it is the only face in its frame.
            x0, y0 = max(0, b.x - b.w), max(0, b.y - b.h)
            x1, y1 = min(image.shape[1], b.x + 2 * b.w), min(image.shape[0], b.y + 2 * b.h)
            key = f"{name}#{k}"
            faces[key] = image[y0:y1, x0:x1].copy()
            refs[key] = Box(b.x - x0, b.y - y0, b.w, b.h, 1.0)
            IDENTITY[key] = key
    return faces, refs


def _verification(report: Any, embedders: dict[str, Any], faces: dict[str, np.ndarray],
                  refs: dict[str, Box]) -> None:
    extra_faces, extra_refs = _more_people()
    faces, refs = {**faces, **extra_faces}, {**refs, **extra_refs}
    people = len(set(IDENTITY[name] for name in faces))
    found = {}
    dlib_samples: list[tuple[str, str, int, np.ndarray]] = []
    lbp_samples: list[tuple[str, str, int, np.ndarray]] = []
    for name in ("dlib", "lbp"):
        samples = _embed_all(embedders[name], faces, refs)
        dlib_samples = samples if name == "dlib" else dlib_samples
        lbp_samples = samples if name == "lbp" else lbp_samples
        genuine, impostor = _pairs(samples, floor=48)
        at_far = float(np.quantile(impostor, 0.99))
        found[name] = (float(np.mean(genuine > at_far)), at_far, genuine, impostor)
    tar, at, genuine, impostor = found["dlib"]
    ptar, pat, _, _ = found["lbp"]
    report.row(AREA, f"TAR @ FAR 1%, faces >= 48 px ({people} people; {len(genuine)} genuine, "
               f"{len(impostor)} impostor pairs)",
               f"{tar:.3f} (dlib, threshold {at:.3f})", peer=f"{ptar:.3f} (lbp, {pat:.3f})",
               ratio=tar / ptar if ptar else None)
    threshold = embedders["dlib"].default_threshold
    for floor in FLOORS:
        genuine, impostor = _pairs(dlib_samples, floor)
        report.row(
            AREA, f"dlib scores, faces >= {floor} px: genuine min / 5%, impostor 99.9% / max",
            f"{genuine.min():.3f} / {np.quantile(genuine, 0.05):.3f}, "
            f"{np.quantile(impostor, 0.999):.3f} / {impostor.max():.3f}",
        )
        far = float(np.mean(impostor >= threshold))
        report.row(AREA, f"dlib at the default threshold {threshold}, faces >= {floor} px: "
                   "TAR / FAR", f"{np.mean(genuine >= threshold):.3f} / {far:.4f}",
                   goal="FAR <= 0.001" if floor >= GATE_PX else "",
                   met=(far <= 0.001) if floor >= GATE_PX else None)
    _confidence_fit(report, embedders, dlib_samples, lbp_samples)
    genuine, impostor = _pairs(dlib_samples, GATE_PX)
    calibrated = math.ceil(float(impostor.max()) * 100) / 100
    report.row(AREA, f"calibrated threshold: above every impostor >= {GATE_PX} px (to 0.01)",
               f"{calibrated:.2f} (TAR {np.mean(genuine >= calibrated):.3f})",
               peer=f"default {threshold}", goal="default == calibrated",
               met=abs(calibrated - threshold) < 1e-9)


GATE_FACE_SIZES = (32, 36, 40, 44, 48, 56)
GATE_SIDES = (32, 36, 40, 44, 48)  # candidate min_face_area = side x side
GATE_PROBES = ("obama2.jpg", "obama3.jpg", "obama_partial_face.jpg")
# The gate admits a face only if faces of its box size are identified as well as
# faces of 48 px and more (the detector goal) are: measured in the same run.
GATE_REFERENCE_PX = 48


def _face_size_gate(report: Any, detectors: dict[str, Any], embedders: dict[str, Any],
                    faces: dict[str, np.ndarray], refs: dict[str, Box]) -> None:
    """Identification vs face size (default detector + dlib, default threshold), and the gate.

    The gate sees the detector's box, not the face's true size (HOG's boxes come
    in steps of its scale pyramid, BlazeFace's vary by +-40% around the face), so
    faces of one size get boxes of several.  ``min_face_area`` is the smallest
    box (side x side) whose admitted faces are identified at least as often as
    faces of ``GATE_REFERENCE_PX`` px and more are; the row checks the shipped
    default against it.
    """
    det, emb = detectors[DEFAULT], embedders["dlib"]
    gallery = _gallery(det, emb, faces, refs)
    threshold = emb.default_threshold
    seen: list[tuple[int, int, bool, float]] = []  # face px, box area, identified, blur
    for size, name, seed in itertools.product(GATE_FACE_SIZES, GATE_PROBES, (*SEEDS, 4)):
        frame, truth = _placed(faces[name], refs[name], size, seed)
        boxes = [b for b in det.detect(frame) if _iou(b, truth) >= 0.3]
        if not boxes:
            seen.append((size, 0, False, 0.0))
            continue
        box = boxes[0]
        probe = emb.embed(frame, box)
        who, score = max(((w, float(v @ probe)) for w, v in gallery.items()), key=lambda t: t[1])
        blur = blur_score(grey(crop(frame, box)))
        seen.append((size, box.w * box.h, who == "obama" and score >= threshold, blur))
    for size in GATE_FACE_SIZES:
        rows = [r for r in seen if r[0] == size]
        sides = sorted({round(math.sqrt(r[1])) for r in rows if r[1]})
        report.row(AREA, f"second photo identified by face size, {size} px ({len(rows)} frames,"
                   f" 3 photos; {det.name} box sides {'/'.join(map(str, sides))} px)",
                   f"{np.mean([r[2] for r in rows]):.2f} ({det.name}+dlib @ {threshold})")
    reference = [r[2] for r in seen if r[0] >= GATE_REFERENCE_PX]
    target = float(np.mean(reference))
    chosen = None
    for side in GATE_SIDES:
        admitted = [r for r in seen if r[1] >= side * side]
        accuracy = float(np.mean([r[2] for r in admitted])) if admitted else 0.0
        at48 = [r for r in seen if r[0] == 48]
        kept48 = float(np.mean([r[2] and r[1] >= side * side for r in at48]))
        if chosen is None and accuracy >= target - 1e-9:
            chosen = side
        report.row(AREA, f"min_face_area {side}x{side}: admitted faces identified (of "
                   f"{len(admitted)}); 48 px faces admitted and identified",
                   f"{accuracy:.3f}; {kept48:.2f}")
    shipped = MatchingSettings().min_face_area
    side = chosen or GATE_SIDES[-1]
    at48 = [r for r in seen if r[0] == 48]
    kept48 = float(np.mean([r[2] and r[1] >= side * side for r in at48]))
    report.row(AREA, f"min_face_area from data: smallest box whose faces are identified as "
               f"often as faces >= {GATE_REFERENCE_PX} px ({target:.3f}): {side}x{side}; "
               f"48 px faces identified behind it",
               f"{side * side} px2; {kept48:.2f}", peer=f"default {shipped}",
               goal="default == from data; >= 0.9",
               met=shipped == side * side and kept48 >= 0.9)
    blurs = [r[3] for r in seen if r[1] >= side * side]
    report.row(AREA, "min_blur_score: Laplacian variance of admitted crops, min / 5%",
               f"{min(blurs):.0f} / {np.quantile(blurs, 0.05):.0f}",
               peer=f"default {MatchingSettings().min_blur_score:g}")


CONFIDENCE_FLOOR = 48  # the fit counts pairs of faces at least this wide (they overlap)


def _confidence_fit(report: Any, embedders: dict[str, Any],
                    dlib_samples: list[tuple[str, str, int, np.ndarray]],
                    lbp_samples: list[tuple[str, str, int, np.ndarray]]) -> None:
    """The logistic fit behind each embedder's ``calibration`` (agent.matching.calibration)."""
    for name, samples in (("dlib", dlib_samples), ("lbp", lbp_samples)):
        genuine, impostor = _pairs(samples, CONFIDENCE_FLOOR)
        fit = fit_logistic(genuine, impostor)
        shipped = embedders[name].calibration
        print(f"   confidence fit ({name}, faces >= {CONFIDENCE_FLOOR} px): "
              f"Calibration(slope={fit.slope:.1f}, midpoint={fit.midpoint:.4f})", flush=True)
        report.row(AREA, f"confidence fit ({name}, faces >= {CONFIDENCE_FLOOR} px, {len(genuine)}"
                   f" genuine / {len(impostor)} impostor pairs): slope, midpoint",
                   f"{fit.slope:.1f}, {fit.midpoint:.4f}",
                   peer=f"shipped {shipped.slope:.1f}, {shipped.midpoint:.4f}")


def _speed(report: Any, detectors: dict[str, Any], embedders: dict[str, Any],
           faces: dict[str, np.ndarray], refs: dict[str, Box]) -> None:
    frame = np.full((FRAME_H, FRAME_W, 3), 110, np.uint8)
    boxes = []
    for i, name in enumerate(("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.png")):
        centre = (80 + 160 * i, 240)
        part, box = _placed(faces[name], refs[name], 90, 0, centre=centre)
        x0, x1 = 160 * i, 160 * (i + 1)
        frame[:, x0:x1] = part[:, x0:x1]
        boxes.append(box)
    cores = os.cpu_count() or 1
    peer = detectors["haar"]
    pt = _time_per_call(lambda: peer.detect(frame))
    for name in DNN_DETECTORS:
        det = detectors[name]
        t = _time_per_call(lambda det=det: det.detect(frame), repeat=20)
        found = len(det.detect(frame))
        how = f"upsample {det.upsample}" if name == "hog" else f"{det.threads} threads"
        goal = ">= 10" if name == DEFAULT else ""
        report.row(AREA, f"detection frames/s, 640x480, 4 faces ({cores} cores; found {found})",
                   f"{1 / t:.1f} ({_label(det)}, {how})", peer=f"{1 / pt:.1f} (haar)",
                   ratio=pt / t, goal=goal, met=1 / t >= 10 if goal else None)
    fast = HogDetector(upsample=0)
    t0 = _time_per_call(lambda: fast.detect(frame))
    report.row(AREA, "detection frames/s, 640x480, hog upsample 0 (faces >= 80 px)",
               f"{1 / t0:.1f}")
    for name, emb in (("dlib", embedders["dlib"]), ("lbp", embedders["lbp"])):
        t = _time_per_call(lambda emb=emb: [emb.embed(frame, b) for b in boxes])
        report.row(AREA, f"embedding 4 faces per frame, frames/s ({name})", f"{1 / t:.1f}",
                   peer="once per track, not per frame")


def run(report: Any) -> None:
    faces, refs, empty = _load()
    detectors = {"hog": HogDetector(upsample=1), "haar": HaarDetector(),
                 "blazeface": BlazeFaceDetector()}
    embedders = {"dlib": DlibEmbedder(), "lbp": LbpEmbedder()}
    _detection(report, detectors, faces, refs, empty)
    _identification(report, detectors, embedders, faces, refs)
    _face_size_gate(report, detectors, embedders, faces, refs)
    _verification(report, embedders, faces, refs)
    _speed(report, detectors, embedders, faces, refs)
