"""A real RTSP server for the hub tests: one ffmpeg per camera, serving a generated clip.

``ffmpeg -rtsp_flags listen`` answers one client (the hub's capture) and loops
the clip at its own rate (``-re``) for as long as that client stays.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time

import cv2
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_clip(
    path: pathlib.Path, *, width: int = 320, height: int = 240, fps: int = 10, seconds: int = 4,
    shade: int = 200,
) -> None:
    """A still background with a square crossing it all the time (motion in every loop)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    side = height // 3
    for i in range(fps * seconds):
        frame = np.full((height, width, 3), 40, np.uint8)
        x = (i * width // (fps * seconds)) % (width - side)
        frame[height // 3 : height // 3 + side, x : x + side] = shade
        writer.write(frame)
    writer.release()


def listening(port: int) -> bool:
    """A TCP socket listens on ``port`` (from /proc/net/tcp, without connecting)."""
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


class RtspServer:
    """Debian's rtsp-server-perl: sources publish (RECORD) on ``source_port``, clients read.

    It sends RTP over UDP only (no interleaved TCP): the hub's sources say
    ``transport = "udp"``.
    """

    def __init__(self, logs: pathlib.Path, address: str = "127.0.0.1") -> None:
        """``address``: where clients connect (a namespace's veth address in netns tests)."""
        binary = shutil.which("rtsp-server-perl")
        self.address = address
        assert binary, "rtsp-server-perl is missing: make mosquitto installs it (Debian package)"
        self.port, self.source_port = free_port(), free_port()
        self._log = (logs / "rtsp-server.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary, "--clientport", str(self.port), "--serverport", str(self.source_port),
                "--client_listen_address", address, "--source_listen_address", "127.0.0.1",
                "--rtp_start_port", str(free_udp_base()), "--loglevel", "2",
            ],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.publishers: list[subprocess.Popen[bytes]] = []
        self._wait(self.port)
        self._wait(self.source_port)
        self.logs = logs

    def _wait(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert self.process.poll() is None, "rtsp-server-perl exited"
            assert time.monotonic() < deadline, "rtsp-server-perl never listened"
            time.sleep(0.05)

    def publish(self, clip: pathlib.Path, mount: str) -> str:
        """Loop ``clip`` (H.264) onto ``/<mount>``; the URL clients read it from."""
        ffmpeg = shutil.which("ffmpeg")
        assert ffmpeg, "ffmpeg is missing: make mosquitto installs it (Debian package ffmpeg)"
        log = (self.logs / f"ffmpeg-{mount}.log").open("wb")
        self.publishers.append(
            subprocess.Popen(
                [
                    ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                    "-i", str(clip), "-an", "-c:v", "libx264", "-preset", "ultrafast",
                    "-tune", "zerolatency", "-g", "10", "-pix_fmt", "yuv420p",
                    "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/{mount}",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        )
        log.close()
        return f"rtsp://{self.address}:{self.port}/{mount}"

    def stop(self) -> None:
        for process in [*self.publishers, self.process]:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._log.close()


def free_udp_base() -> int:
    """An even UDP port with a few free ones after it (RTP/RTCP pairs per client)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return min(port - port % 2, 65400)
