"""The idle daemon keeps dlib, LiteRT and onnxruntime out of memory until a consented frame.

The real ``edge-agent run`` with the default configuration (config/agent.toml: the
sample camera on, face and plate matching on): with neither ``face_recognition`` nor
``plate_recognition`` consented, the frames flow (motion events are logged) but
neither dlib's extension, LiteRT's (the BlazeFace detector's runtime) nor
onnxruntime's is mapped into the process.  Consented,
they load on the first frame; withdrawn, the models are released again
(drivers/vision/lazy_models.py).  ``make bench`` (tests/bench/bench_footprint.py)
measures the memory and the time to READY.
"""

from __future__ import annotations

import pathlib
import subprocess
import time

from agent.matching.settings import MatchingSettings
from tests.support.broker import free_port
from tests.support.footprint import agent, default_config_text, edge_agent_command, mapped_files

# dlib-bin's extension module; ai-edge-litert's interpreter binding and runtime library;
# onnxruntime's Python binding and its provider library.
DLIB = "_dlib_pybind11"
LITERT = ("_pywrap_litert_interpreter_wrapper", "libLiteRt", "libpywrap_litert_common")
ONNXRUNTIME = ("onnxruntime_pybind11_state", "libonnxruntime")
DETECTOR = MatchingSettings().face_detector.value  # config/agent.toml keeps the default


def _vision_libraries(pid: int) -> dict[str, bool]:
    names = mapped_files(pid)
    return {
        "dlib": any(n.startswith(DLIB) for n in names),
        "litert": any(n.startswith(LITERT) for n in names),
        "onnxruntime": any(n.startswith(ONNXRUNTIME) for n in names),
    }


def _config(tmp_path: pathlib.Path) -> pathlib.Path:
    config = tmp_path / "agent.toml"
    # Loopback-only and no fixed ports; the camera and [matching] stay the defaults.
    config.write_text(
        default_config_text(
            free_port(),
            logs={"event_lines": "true"},
            discovery={"discoverable": "false", "wsd_enabled": "false", "mdns_enabled": "false"},
            provisioning={"lan_enabled": "false"},
        )
    )
    return config


def _consent(change: str, purpose: str, config: pathlib.Path, state: pathlib.Path) -> None:
    confirm = ["--yes"] if change == "grant" else []  # a withdrawal asks nothing
    result = subprocess.run(
        [*edge_agent_command(), "consent", change, purpose, *confirm,
         "--config", str(config), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_without_vision_consent_no_model_library_is_loaded(tmp_path: pathlib.Path) -> None:
    config = _config(tmp_path)
    with agent(config, tmp_path / "state", tmp_path) as daemon:
        daemon.start()
        # Sentinel: camera frames went through the frame bus to every subscriber, and the
        # loop ticked the face and plate services on them.
        assert daemon.wait_for_stderr("motion end held", 30), daemon.stderr()[-3000:]
        assert _vision_libraries(daemon.pid) == {
            "dlib": False, "litert": False, "onnxruntime": False
        }
        assert "Traceback" not in daemon.stderr()


def test_consent_loads_the_models_and_withdrawal_releases_them(tmp_path: pathlib.Path) -> None:
    config, state = _config(tmp_path), tmp_path / "state"
    _consent("grant", "all", config, state)
    with agent(config, state, tmp_path) as daemon:
        daemon.start()
        # BlazeFace (the default detector) runs on LiteRT; the embedder is dlib's.
        loaded = {"dlib": True, "litert": DETECTOR == "blazeface", "onnxruntime": True}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if _vision_libraries(daemon.pid) == loaded:
                break
            time.sleep(0.2)
        assert _vision_libraries(daemon.pid) == loaded, daemon.stderr()[-3000:]
        assert daemon.wait_for_stderr(f"face detector ({DETECTOR}) loaded", 10)
        assert daemon.wait_for_stderr("plate reader (PP-OCR) loaded", 30), daemon.stderr()[-3000:]
        _consent("withdraw", "all", config, state)
        assert daemon.wait_for_stderr(f"face detector ({DETECTOR}) released", 20), (
            daemon.stderr()[-3000:]
        )
        assert daemon.wait_for_stderr("plate reader (PP-OCR) released", 20)
        assert "Traceback" not in daemon.stderr()
