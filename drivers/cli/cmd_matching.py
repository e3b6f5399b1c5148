"""Face gallery commands.

* ``edge-agent enrol face NAME IMAGES... [--label TEXT]``: add samples of a person
* ``edge-agent match IMAGE``: who is in a photo (exit code 3: nobody enrolled)
* ``edge-agent gallery list [--json]``, ``gallery remove NAME``,
  ``gallery rename NAME [--to NEW] [--label TEXT]``
* ``edge-agent gallery reembed [--yes]``: after a change of ``matching.face_embedder``,
  rebuild every identity's vectors from its kept enrolment crops
  (``matching.keep_enrolment_crops``); who has none is named and must re-enrol

Enrolment and matching need the ``face_recognition`` consent; listing and
removal always work so the owner can see and delete their data (also a gallery
made by another embedder than the configured one, which enrolment and
matching refuse with a message asking for re-enrolment).  A gallery found while
that consent is off (withdrawn while no agent ran) is erased.

Faces are found by the configured detector (``matching.face_detector``) and
embedded by the configured embedder, exactly as the camera pipeline does, so
enrolment crops are aligned the same way as the crops matched at run time.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import TYPE_CHECKING, Any

from agent.errors import BadDataError
from agent.purposes import Purpose
from drivers.cli import plates_cli
from drivers.cli.common import add_config_options, add_json_option
from drivers.cli.composed import with_composition
from drivers.cli.output import print_json

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import numpy.typing as npt

    from agent.matching.faces import FaceRecogniser
    from agent.matching.gallery import Gallery
    from drivers.compose import Composition
    from drivers.vision.faces import FaceDetectorImpl, FaceEmbedderImpl

PROGRESS_EVERY = 25
# `match`: the photo shows nobody enrolled (0 = someone known; 1, 2, 73 as everywhere).
EXIT_UNKNOWN = 3


def _is_granted(c: Composition, args: argparse.Namespace) -> Callable[[Purpose], bool]:
    if getattr(args, "assume_consent", False):
        # Test-only escape hatch: consent as if granted, without touching the ledger.
        def is_granted(purpose: Purpose) -> bool:
            return purpose is Purpose.FACE_RECOGNITION

        return is_granted
    return c.ledger.is_granted


def _recogniser(
    c: Composition, args: argparse.Namespace
) -> tuple[FaceRecogniser, FaceEmbedderImpl, FaceDetectorImpl]:
    """The configured embedder and detector; the gallery (refused if another embedder made it)."""
    # lazy: heavy (numpy/cv2/dlib)
    from drivers.vision.faces import build_detector, build_embedder
    from drivers.vision.gallery import build_recogniser

    embedder = build_embedder(c.config.matching)
    recogniser = build_recogniser(
        c.config, embedder, _is_granted(c, args), camera="cli", audit=c.audit, keys=c.keys
    )
    if not recogniser.active:
        recogniser.on_withdrawn(Purpose.FACE_RECOGNITION)
        recogniser.require_consent()
    return recogniser, embedder, build_detector(c.config.matching)


def _stored_gallery(c: Composition, args: argparse.Namespace) -> Gallery:
    """The gallery as it is on disk, whichever embedder made it (listing and removal)."""
    # lazy: heavy (numpy)
    from agent.matching.faces import FaceRecogniser
    from agent.matching.gallery_manifest import Sealer, read_manifest
    from agent.matching.tracks import Tracker
    from agent.sealing import KeyDestroyed
    from drivers.vision.gallery import open_face_gallery

    try:
        manifest = read_manifest(c.layout.faces_dir, Sealer(c.keys))
    except KeyDestroyed:
        manifest = None  # erased: the gallery opens empty and removes the leftovers
    gallery = open_face_gallery(c.config, 1 if manifest is None else manifest.dim, c.keys)
    recogniser = FaceRecogniser(
        gallery, _is_granted(c, args), threshold=1.0, tracker=Tracker(1, 1), camera="cli"
    )
    if not recogniser.active:
        recogniser.on_withdrawn(Purpose.FACE_RECOGNITION)
    return gallery


def embed_photo(
    path: pathlib.Path, embedder: FaceEmbedderImpl, detector: FaceDetectorImpl
) -> npt.NDArray[np.float32]:
    """The embedding of the largest face in ``path`` (the whole photo if none is found)."""
    from drivers.vision.faces import main_face_box, read_image  # lazy: heavy (numpy/cv2)

    image = read_image(path)
    return embedder.embed(image, main_face_box(detector, image))


@with_composition
def _enrol_face(c: Composition, args: argparse.Namespace) -> int:
    # lazy: heavy (numpy/cv2)
    import numpy as np

    from agent.matching.crops import EnrolmentCrop
    from agent.matching.quality import QualityGate
    from drivers.vision.faces import crop, enrolment_crop, grey, main_face_box, read_image

    recogniser, embedder, detector = _recogniser(c, args)
    settings = c.config.matching
    min_blur = settings.min_blur_score if args.min_blur is None else args.min_blur
    gate = QualityGate(settings.min_face_area, min_blur)
    paths = [pathlib.Path(p) for p in args.images]
    samples: list[npt.NDArray[np.float32]] = []
    crops: list[EnrolmentCrop] = []
    keep = settings.keep_enrolment_crops
    skipped = 0
    for done, path in enumerate(paths, start=1):
        try:
            image = read_image(path)
            box = main_face_box(detector, image)
            problem = gate.rejects(box.w, box.h, grey(crop(image, box)))
            if problem is not None:
                raise BadDataError(f"{path}: face too {problem}")
            samples.append(embedder.embed(image, box))
            if keep:
                crops.append(enrolment_crop(image, box))
        except BadDataError as exc:
            skipped += 1
            print(f"edge-agent: skipped {exc}", file=sys.stderr)
        if done % PROGRESS_EVERY == 0 or done == len(paths):
            print(f"enrol: {done}/{len(paths)} images", file=sys.stderr, flush=True)
    if not samples:
        raise BadDataError("no usable face image")
    record = recogniser.enrol(
        args.name, np.stack(samples), c.clock.now(), label=args.label, crops=crops if keep else None
    )
    if args.json:
        print_json({"name": record.name, "id": record.id, "samples": len(samples),
                    "skipped": skipped, "crops_kept": len(crops)})
        return 0
    kept = f", {len(crops)} face crops kept (sealed)" if keep else ""
    print(f"enrolled {record.name} ({record.id}): {len(samples)} samples, {skipped} skipped{kept}")
    return 0


@with_composition
def _match(c: Composition, args: argparse.Namespace) -> int:
    recogniser, embedder, detector = _recogniser(c, args)
    vector = embed_photo(pathlib.Path(args.image), embedder, detector)
    match = recogniser.identify(vector)
    if args.json:
        known = match.identity is not None
        print_json({
            "known": known,
            "name": match.identity.name if match.identity is not None else None,
            "id": match.identity.id if match.identity is not None else None,
            "score": round(float(match.score), 6),
        })
        return 0 if known else EXIT_UNKNOWN
    if match.identity is None:
        print(f"unknown (best score {match.score:.3f})")
        return EXIT_UNKNOWN
    print(f"{match.identity.name} ({match.identity.id}) score {match.score:.3f}")
    return 0


@with_composition
def _list(c: Composition, args: argparse.Namespace) -> int:
    from agent.matching.gallery import counts_by_name  # lazy: heavy (numpy/cv2)

    gallery = _stored_gallery(c, args)
    rows = counts_by_name(gallery)
    if args.json:
        print(json.dumps(gallery.listing(), indent=2))
        return 0
    for record, samples in rows:
        label = f"  label={record.label}" if record.label else ""
        redo = "  (no samples: needs re-enrolment)" if samples == 0 else ""
        print(f"{record.name:24} {record.id}  samples={samples}{label}{redo}")
    if not rows:
        print("no faces enrolled")
    return 0


@with_composition
def _remove(c: Composition, args: argparse.Namespace) -> int:
    record = _stored_gallery(c, args).remove(args.name)
    if args.json:
        print_json({"removed": {"name": record.name, "id": record.id}})
        return 0
    print(f"removed {record.name} ({record.id})")
    return 0


@with_composition
def _rename(c: Composition, args: argparse.Namespace) -> int:
    record = _stored_gallery(c, args).rename(args.name, args.to, args.label)
    if args.json:
        print_json({"name": record.name, "id": record.id, "label": record.label or None})
        return 0
    print(f"{record.name} ({record.id}) label={record.label or '-'}")
    return 0


def _must_reenrol(names: list[str]) -> str:
    return (
        f"no enrolment crops kept for {', '.join(names)}: they must re-enrol"
        " (`edge-agent enrol face NAME IMAGES...`) or be removed (`edge-agent gallery remove NAME`)"
    )


@with_composition
def _reembed(c: Composition, args: argparse.Namespace) -> int:
    # lazy: heavy (numpy/cv2/dlib)
    from agent.errors import ConsentRequiredError, PolicyError
    from drivers.vision.faces import build_detector, build_embedder, embed_crop

    gallery = _stored_gallery(c, args)
    if not _is_granted(c, args)(Purpose.FACE_RECOGNITION):
        raise ConsentRequiredError(Purpose.FACE_RECOGNITION.value)
    kept = gallery.crops.numbers()
    missing = [r.name for r in gallery.identities() if r.number not in kept]
    if not gallery.identities():
        if args.json:
            print_json({"embedder": None, "reembedded": [], "without_crops": []})
            return 0
        print("no faces enrolled: nothing to re-embed")
        return 0
    if missing and not args.yes:
        raise PolicyError(
            _must_reenrol(missing) + "; `edge-agent gallery reembed --yes` re-embeds the others"
            " and keeps these names with no samples until they enrol again"
        )
    embedder = build_embedder(c.config.matching)
    detector = build_detector(c.config.matching)
    done = gallery.reembed(lambda crop: embed_crop(crop, detector, embedder), embedder.name)
    c.audit.record(
        "face.reembed",
        {
            "embedder": embedder.name,
            "identities": len(done.done),
            "without_crops": len(done.missing),
        },
        c.clock.now(),
    )
    if args.json:
        print_json({
            "embedder": embedder.name,
            "reembedded": [
                {"name": r.name, "id": r.id, "samples": n} for r, n in done.done
            ],
            "without_crops": [r.name for r in done.missing],
        })
        return 0
    for record, samples in done.done:
        print(f"re-embedded {record.name} ({record.id}): {samples} samples ({embedder.name})")
    if done.missing:
        print(_must_reenrol([r.name for r in done.missing]))
    return 0


def _add(
    sub: Any, name: str, func: Any, help_text: str, **extra: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, **extra)
    add_config_options(parser)
    add_json_option(parser)
    parser.add_argument("--assume-consent", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=func)
    return parser


def register(subparsers: Any) -> None:
    enrol = subparsers.add_parser("enrol", help="add a face or a plate")
    enrol_subparsers = enrol.add_subparsers(dest="enrol_kind", metavar="KIND")
    enrol_subparsers.required = True
    face = _add(enrol_subparsers, "face", _enrol_face, "enrol a person from face photos")
    face.add_argument("name", metavar="NAME", help="local name of the person")
    face.add_argument("images", metavar="IMAGES", nargs="+", help="photos of that person")
    face.add_argument("--label", default=None, help="display label sent with matches")
    face.add_argument(
        "--min-blur", type=float, default=None, help="skip blurrier photos (default: config)"
    )
    plates_cli.register_enrol_plate(enrol_subparsers)

    match = _add(
        subparsers, "match", _match, "identify the face in a photo",
        epilog=f"exit codes: 0 someone enrolled, {EXIT_UNKNOWN} nobody enrolled (unknown face); "
        "1, 2, 73 and 130 as for every command (edge-agent --help)",
    )
    match.add_argument("image", metavar="IMAGE", help="a photo to match against the gallery")

    gallery = subparsers.add_parser("gallery", help="list or edit enrolled faces")
    gallery_subparsers = gallery.add_subparsers(dest="gallery_command", metavar="ACTION")
    gallery_subparsers.required = True
    _add(gallery_subparsers, "list", _list, "list enrolled people")
    remove = _add(gallery_subparsers, "remove", _remove, "remove a person and their samples")
    remove.add_argument("name", metavar="NAME", help="the person to remove")
    rename = _add(gallery_subparsers, "rename", _rename, "rename or (un)label a person")
    rename.add_argument("name", metavar="NAME", help="the person to rename")
    rename.add_argument("--to", default=None, metavar="NEW_NAME", help="the new local name")
    rename.add_argument("--label", default=None, help="display label ('' clears it)")
    reembed = _add(
        gallery_subparsers,
        "reembed",
        _reembed,
        "re-embed everyone from kept enrolment crops with the configured face embedder",
    )
    reembed.add_argument(
        "--yes",
        action="store_true",
        help="go ahead even if some people have no kept crops (they keep no samples)",
    )
    plates_cli.register_gallery_plate(gallery_subparsers)
