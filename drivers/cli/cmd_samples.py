"""``edge-agent samples faces DIR``: photos of the sample camera's drawn people.

The sample camera (``[camera] source = "sample"``, what ``make run`` uses)
shows people 0 to 7 of :mod:`drivers.vision.synth`, one or two at a time.  This
writes PNG captures of them, so a newcomer can enrol one (``edge-agent enrol
face``) and watch the running agent report a ``face.match`` without a real
camera or real faces.  Drawn faces need the Haar + LBP matcher
(``config/dev.toml``); dlib's default detector does not see them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from agent.errors import DecodeError, DeviceIOError

PEOPLE = 8  # drivers.vision.capture.SampleSource draws people 0..7


def _people(text: str) -> list[int]:
    chosen: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise DecodeError(f"--people: {part!r} is not N or N-M")
        span = range(int(low), int(high or low) + 1)
        if not span or span.start < 0 or span.stop > PEOPLE:
            raise DecodeError(f"--people: the sample camera shows people 0 to {PEOPLE - 1}")
        chosen.extend(span)
    return sorted(set(chosen))


def _faces(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from agent.config import CameraSettings
    from drivers.vision.synth import render_scene

    camera = CameraSettings()

    people = _people(args.people)
    if args.per_person < 1:
        raise DecodeError("--per-person must be 1 or more")
    out = pathlib.Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    written: dict[str, list[str]] = {}
    for person in people:
        for k in range(args.per_person):
            path = out / f"person{person}-{k}.png"
            # As the sample camera frames them: one person in its scene, its sensor noise.
            scene, _ = render_scene([person], rng, camera.width, camera.height)
            noise = rng.integers(-2, 3, size=scene.shape, dtype=np.int16)
            photo = np.clip(scene.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            if not cv2.imwrite(str(path), photo):
                raise DeviceIOError(f"cannot write {path}")
            written.setdefault(f"person{person}", []).append(str(path))
    if args.json:
        print(json.dumps(written, indent=2, sort_keys=True))
    else:
        for name, paths in written.items():
            print(f"{name}: {' '.join(paths)}")
    print(
        f"edge-agent: enrol one with: edge-agent enrol face NAME {out}/person{people[0]}-*.png",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "samples", help="sample data for trying the agent without a camera"
    )
    sub = parser.add_subparsers(dest="samples_command", metavar="ACTION")
    sub.required = True
    faces = sub.add_parser(
        "faces",
        help="write photos of the sample camera's drawn people (for `enrol face`)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    faces.add_argument("directory", metavar="DIR", help="where to write the PNG files")
    faces.add_argument(
        "--people", default=f"0-{PEOPLE - 1}",
        help=f"which people, e.g. 3 or 0-2,5 (default: all, 0-{PEOPLE - 1})",
    )
    faces.add_argument("--per-person", type=int, default=4, help="photos of each (default 4)")
    faces.add_argument("--seed", type=int, default=1, help="random seed of the pose jitter")
    faces.add_argument("--json", action="store_true", help="print the files as JSON")
    faces.set_defaults(func=_faces)
