"""The real agent with its state directory on the loop-mounted image, and its real channels.

Everything reaches the device the way an owner's data does in the field:

* ``edge-agent consent grant``, ``enrol face NAME IMAGES --label``, ``enrol plate``
  (the real CLI, each a child process, as the owner runs it on the device);
* a camera: the agent's ``file`` source plays a video of the enrolled person next
  to a moving pattern, so the face pipeline makes ``face.match`` events with a
  snapshot and motion detection makes ``motion`` events (``cloud_events``);
* the installer's binding of the owner's key and account over the LAN API (SPAKE2);
* Wi-Fi provisioning over the LAN API, NetworkManager being the fake
  ``nmcli`` of tests/wifi (its profiles kept off the image: they stand for
  ``/etc``, not the state directory);
* a request line on the LAN provisioning API, which the agent logs at DEBUG with
  ``troubleshooting_logs`` granted;
* signed MQTT commands over a real mosquitto (``plate.observe``, ``consent.set``,
  ``data.erase``).

Nothing but the state directory is on the image: the configuration, the video,
the enrolment photos, exports and bundles stay in the test's temporary directory.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import PolicyError
from agent.provisioning.wifi import WifiCredentials
from drivers.provisioning.lan_client import LanClient
from drivers.provisioning.store import load_or_create_binding
from drivers.vision.synth import FaceTraits, draw_face
from tests.support.broker import Broker, free_port
from tests.support.process import REPO, spawn_agent

Image = npt.NDArray[np.uint8]
HERE = pathlib.Path(__file__).resolve().parent
SERIAL = "EA-SAMPLE-0001"
TOKEN = "tech-token-raw-disk-4471"
FPS = 10
WIDTH, HEIGHT = 320, 240
IDENTITY = 3  # the synthetic person enrolled and shown to the camera


@dataclasses.dataclass(frozen=True)
class Markers:
    """Distinctive values planted through the device's channels, one per kind of data."""

    name: str = "Wilhelmina Quaxbottle"
    face_label: str = "Aunt Zebulonia"
    plate: str = "QX7JW42K"
    plate_label: str = "Vantablack Camper"
    ssid_home: str = "Marzipan-Orbit"
    passphrase: str = "Gingko-Trampoline-55"
    ssid_failed: str = "Obsidian-Llama"
    log_path: str = "quokka.lantern.zephyr"
    account: str = "hollowbrook-estate-acct"


# --- the camera's video --------------------------------------------------------------------


def _scene(pattern_x: int | None) -> Image:
    """The enrolled person on the left; a striped marker pattern on the right when shown."""
    frame = np.full((HEIGHT, WIDTH, 3), 120, np.uint8)
    cv2.rectangle(frame, (0, 200), (WIDTH, HEIGHT), (90, 110, 90), -1)
    draw_face(frame, FaceTraits.for_identity(IDENTITY), 90, 110, 100)
    if pattern_x is not None:
        for k in range(6):  # black/white stripes and a word, nothing like a face
            colour = (255, 255, 255) if k % 2 else (0, 0, 0)
            cv2.rectangle(frame, (pattern_x + 12 * k, 30), (pattern_x + 12 * k + 11, 170),
                          colour, -1)
        cv2.putText(frame, "QXMARK", (pattern_x - 10, 190), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 0, 255), 2)
    return frame


def write_video(path: pathlib.Path, seconds: float = 4.5) -> list[Image]:
    """An MJPG video: the person stands still while the pattern moves for a second, then rests.

    The move is one motion event (it ends after a second of quiet); the person is
    matched within the first frames.  Returns the frames to enrol the person from.
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), "OpenCV cannot write an MJPG video here"
    moving = FPS  # frames
    for i in range(int(seconds * FPS)):
        writer.write(_scene(180 + 6 * min(i, moving)))
    writer.release()
    return [_scene(None), _scene(None)]


# --- the device --------------------------------------------------------------------------


class Device:
    def __init__(self, root: pathlib.Path, state: pathlib.Path, broker: Broker) -> None:
        self.root, self.state, self.broker = root, state, broker
        self.nm = root / "nm"
        self.nm.mkdir()
        nmcli = root / "nmcli"
        nmcli.write_text(f"#!{sys.executable}\n" + (HERE.parent / "wifi" / "fake_nmcli.py")
                         .read_text())
        nmcli.chmod(0o755)
        token = root / "technician.token"
        token.write_text(TOKEN + "\n")
        self.video = root / "camera.avi"
        self.enrol_frames = write_video(self.video)
        self.lan_port, self.logs_port = free_port(), free_port()
        self.config = root / "agent.toml"
        self.config.write_text(
            f"[mqtt]\nport = {broker.port}\ntls = 'off'\n"
            "reconnect_min_seconds = 0.1\nreconnect_max_seconds = 0.5\n"
            "[discovery]\ndiscoverable = false\n"
            f"[camera]\nenabled = true\nsource = 'file'\nuri = '{self.video}'\nfps = {FPS}.0\n"
            f"width = {WIDTH}\nheight = {HEIGHT}\n"
            "[runtime]\ntick_seconds = 0.05\n"
            # The shortest statistics period, and every count shown (k = 1), so a
            # statistics message is queued within a minute of the second run.
            "[privacy]\nstatistics_interval_seconds = 60\nstatistics_min_count = 1\n"
            # Drawn faces: the model-free detector and embedder (dlib's find no cartoon).
            "[matching]\nconsensus_frames = 2\nconsensus_window = 3\n"
            "face_detector = 'haar'\nface_embedder = 'lbp'\n"
            f"[logs]\nlevel = 'DEBUG'\ntechnician_token_file = '{token}'\n"
            f"lan_port = {self.logs_port}\n"
            f"[provisioning]\nwifi_backend = 'networkmanager'\nnmcli_path = '{nmcli}'\n"
            f"lan_bind_address = '127.0.0.1'\nlan_port = {self.lan_port}\n"
            "connect_timeout_seconds = 5.0\n"
        )
        self.env = {**os.environ, "FAKE_NMCLI_DIR": str(self.nm)}
        self.proc: subprocess.Popen[Any] | None = None
        self.stderr = ""

    # --- the CLI -------------------------------------------------------------------

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """``edge-agent ARGV --config ... --state-dir ...`` in a child process."""
        command = [sys.executable, "-m", "drivers", *argv, "--config", str(self.config),
                   "--state-dir", str(self.state)]
        done = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True,
                              timeout=60, check=False)
        if check:
            assert done.returncode == 0, (
                f"edge-agent {' '.join(argv)} exited with {done.returncode}:\n"
                + done.stderr[-2000:].decode("utf-8", "replace")
            )
        return done

    def grant_all(self) -> None:
        self.cli("consent", "grant", "--yes", "all")

    def enrol_face(self, markers: Markers) -> None:
        images = []
        for i, frame in enumerate(self.enrol_frames):
            path = self.root / f"enrol-{i}.png"
            cv2.imwrite(str(path), frame)
            images.append(str(path))
        self.cli("enrol", "face", markers.name, *images, "--label", markers.face_label,
                 "--min-blur", "1")

    def enrol_plate(self, markers: Markers) -> None:
        self.cli("enrol", "plate", markers.plate, "--label", markers.plate_label)

    def export(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """``edge-agent data export``: the document and the files it names (kept off the image)."""
        out = self.root / f"export-{time.monotonic_ns()}.zip"
        done = self.cli("data", "export", "-o", str(out), check=False)  # 1: incomplete
        assert out.is_file(), (
            f"edge-agent data export wrote nothing (exit {done.returncode}):\n"
            + done.stderr[-2000:].decode("utf-8", "replace")
        )
        archive = zipfile.ZipFile(io.BytesIO(out.read_bytes()))
        files = {n: archive.read(n) for n in archive.namelist() if n != "export.json"}
        return json.loads(archive.read("export.json")), files

    def log_bundle(self) -> bytes:
        out = self.root / f"bundle-{time.monotonic_ns()}.jsonl"
        self.cli("logs", "bundle", "-o", str(out))
        return out.read_bytes()

    # --- the daemon --------------------------------------------------------------

    def start(self) -> None:
        load_or_create_binding(self.state, SERIAL)
        self.proc = spawn_agent(self.config, self.state, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=self.env)
        deadline = time.monotonic() + 30
        while not self._answers():
            assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the agent's LAN log endpoint never came up"
            time.sleep(0.1)

    def _answers(self) -> bool:
        # The log endpoint always listens; the provisioning API closes once provisioned.
        try:
            http_get(self.logs_port, "/")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; the agent must exit cleanly."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        self.stderr = err.decode("utf-8", "replace")
        code, self.proc = self.proc.returncode, None
        assert code == 0, f"the agent exited with {code}: {self.stderr[-3000:]}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    # --- LAN channels ------------------------------------------------------------------

    def _lan(self) -> tuple[LanClient, str]:
        code = load_or_create_binding(self.state, SERIAL).verification_code
        return LanClient(f"http://127.0.0.1:{self.lan_port}", timeout=20), code

    def bind_owner(self, markers: Markers, owner_key: bytes) -> str:
        """The installer binds the owner's key and account over the LAN API; the new device id."""
        client, code = self._lan()
        return client.bind(client.authenticate(code, SERIAL), markers.account, owner_key)

    def provision_wifi(self, markers: Markers) -> None:
        """A failed attempt on an unknown network, then the home network (both SSIDs seen)."""
        (self.nm / "scenario.json").write_text(
            json.dumps({"networks": {markers.ssid_home: markers.passphrase}})
        )
        client, code = self._lan()
        try:
            client.provision(client.authenticate(code, SERIAL),
                             WifiCredentials(markers.ssid_failed, markers.passphrase),
                             wait=30, poll_interval=0.1)
        except PolicyError:
            pass  # the network is not there: the device saw the SSID and the passphrase
        else:
            raise AssertionError(f"joined {markers.ssid_failed!r}, which does not exist")
        status = client.provision(client.authenticate(code, SERIAL),
                                  WifiCredentials(markers.ssid_home, markers.passphrase),
                                  wait=30, poll_interval=0.1)
        assert status["state"] == "connected", status

    def log_request(self, markers: Markers) -> None:
        """A request line the LAN API logs (at DEBUG) with the marker in its path."""
        deadline = time.monotonic() + 15
        while True:
            try:
                http_get(self.lan_port, f"/provision/v1/{markers.log_path}")
                return
            except OSError:
                assert time.monotonic() < deadline, "the LAN provisioning API never came up"
                time.sleep(0.1)

    def nm_profiles(self) -> dict[str, Any]:
        path = self.nm / "state.json"
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return state.get("connections", {})  # type: ignore[no-any-return]


def http_get(port: int, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
