"""Provisioning costs: QR decoding per camera frame and the SPAKE2 handshake.

QR: 640x480 frames (codes at three scales, sensor noise 0/8/16) through
:class:`QrReader` (classic detector, then the ArUco one) against a bare
``cv2.QRCodeDetector`` in the same run; the reader runs about once per second
while unprovisioned, so its budget is a fraction of one core.
PAKE: one full device-side session (SPAKE2 + HKDF + key confirmation + AES-GCM
open) against the bare ``spake2`` exchange.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.provisioning.pake import DevicePake, InstallerPake
from agent.provisioning.wifi import WifiCredentials
from drivers.provisioning.qr_reader import QrReader, render_qr

TEXT = "WIFI:T:WPA;S:Bench\\;Net;P:bench-passphrase-123;H:false;;"
SCALES = (0.8, 1.0, 1.6)
NOISES = (0.0, 8.0, 16.0)
PAKE_ROUNDS = 40


def _frames() -> list[NDArray[np.uint8]]:
    frames = []
    rng = np.random.default_rng(1)
    for scale in SCALES:
        code = cv2.resize(render_qr(TEXT, module_pixels=4), None, fx=scale, fy=scale)
        for noise in NOISES:
            frame = np.full((480, 640), 120, dtype=np.float32)
            h, w = code.shape
            frame[(480 - h) // 2 : (480 - h) // 2 + h, (640 - w) // 2 : (640 - w) // 2 + w] = code
            frame += rng.normal(0, noise, frame.shape)
            grey = np.clip(frame, 0, 255).astype(np.uint8)
            frames.append(np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8))
    return frames


def _timed(
    decode: Callable[[NDArray[np.uint8]], str | None], frames: list[NDArray[np.uint8]]
) -> tuple[float, int]:
    times, hits = [], 0
    for _ in range(3):
        for frame in frames:
            start = time.perf_counter()
            text = decode(frame)
            times.append(time.perf_counter() - start)
            hits += text == TEXT
    return statistics.mean(times), hits // 3


def _peer_decode(detector: Any) -> Callable[[NDArray[np.uint8]], str | None]:
    def decode(frame: NDArray[np.uint8]) -> str | None:
        text, points, _ = detector.detectAndDecode(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        return str(text) if points is not None and text else None

    return decode


def _pake_session() -> None:
    installer = InstallerPake("40719382", "EA-BENCH")
    device = DevicePake("40719382", "EA-BENCH", "session")
    confirm_b = device.check_confirmation(
        installer.finish("session", device.respond(installer.start()))
    )
    installer.verify_device(confirm_b)
    device.open_credentials(installer.seal_credentials(WifiCredentials("Net", "passphrase"), 1), 1)


def _bare_spake2() -> None:
    from spake2 import SPAKE2_A, SPAKE2_B

    a, b = SPAKE2_A(b"40719382"), SPAKE2_B(b"40719382")
    msg_a, msg_b = a.start(), b.start()
    a.finish(msg_b)
    b.finish(msg_a)


def run(report: Any) -> None:
    frames = _frames()
    ours, our_hits = _timed(QrReader().read, frames)
    peer, peer_hits = _timed(_peer_decode(cv2.QRCodeDetector()), frames)
    report.row(
        "provisioning",
        "QR decode per 640x480 frame (mean)",
        f"{ours * 1000:.1f} ms, decoded {our_hits}/{len(frames)} frames",
        peer=f"cv2.QRCodeDetector {peer * 1000:.1f} ms, decoded {peer_hits}/{len(frames)}",
        ratio=ours / peer,
        goal="< 100 ms per attempt (1 attempt/s = < 10% of a core)",
        met=ours < 0.100,
    )
    report.row(
        "provisioning",
        "QR frames decoded (scales 0.8-1.6, noise 0-16)",
        f"{our_hits}/{len(frames)}",
        peer=f"cv2.QRCodeDetector {peer_hits}/{len(frames)}",
        ratio=our_hits / max(peer_hits, 1),
        goal=">= peer",
        met=our_hits >= peer_hits,
    )
    pake_times, bare_times = [], []
    for _ in range(PAKE_ROUNDS):
        start = time.perf_counter()
        _pake_session()
        pake_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _bare_spake2()
        bare_times.append(time.perf_counter() - start)
    pake, bare = statistics.median(pake_times), statistics.median(bare_times)
    report.row(
        "provisioning",
        "LAN PAKE session, both sides (median)",
        f"{pake * 1000:.1f} ms",
        peer=f"bare spake2 exchange {bare * 1000:.1f} ms",
        ratio=pake / bare,
        goal="< 500 ms on the device",
        met=pake < 0.5,
    )
