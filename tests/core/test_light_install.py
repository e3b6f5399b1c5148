"""The light install: ``pip install edge-agent`` without the ``vision`` extra.

Technician laptops run ``--help``, ``config check``, ``discover``, ``provision``,
``logs pull``/``bundle`` and ``consent``: none of them may need numpy, OpenCV,
dlib or onnxruntime.  The CLI runs here in a fresh interpreter whose import system
refuses every module the ``vision`` extra of setup.cfg installs (a meta path finder
raising ModuleNotFoundError, as a missing package does); the commands that do need
them (``enrol``, ``run``) stop with one line naming the extra, never a traceback.
"""

from __future__ import annotations

import concurrent.futures
import configparser
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.cli.common import VISION_MODULES

REPO = Path(__file__).resolve().parents[2]
# The blocked import names come in argv[1] (comma-separated); the CLI gets the rest.
SHIM = """
import sys
blocked = set(sys.argv[1].split(","))

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from drivers.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _requirement_names(lines: str) -> set[str]:
    names = set()
    for line in lines.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            match = re.match(r"[A-Za-z0-9._-]+", line)
            assert match, line
            names.add(match.group(0).lower().replace("_", "-"))
    return names


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "setup.cfg")
    return parser


def vision_import_names() -> set[str]:
    """Top-level modules the installed distributions of the vision extra provide."""
    found = set()
    for name in _requirement_names(_setup_cfg()["options.extras_require"]["vision"]):
        for file in importlib.metadata.distribution(name).files or ():
            top = file.parts[0]
            if top.endswith((".dist-info", ".libs", ".data")) or top == "..":
                continue
            module = top.split(".")[0]
            if not module.startswith("_") and module != "__pycache__":
                found.add(module)
    return found


def test_vision_packages_are_an_extra_that_dev_includes() -> None:
    cfg = _setup_cfg()
    core = _requirement_names(cfg["options"]["install_requires"])
    extras = cfg["options.extras_require"]
    vision = _requirement_names(extras["vision"])
    assert {"numpy", "opencv-python-headless", "dlib-bin", "onnxruntime"} <= vision
    assert not core & vision
    assert "edge-agent[vision]" in extras["dev"].split()  # make run / make test get it all
    # The one-line error knows every module the extra brings.
    assert vision_import_names() <= VISION_MODULES
    assert {"numpy", "cv2", "dlib", "onnxruntime"} <= vision_import_names()


def _cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    blocked = ",".join(sorted(vision_import_names() | VISION_MODULES))
    return subprocess.run(
        [sys.executable, "-c", SHIM, blocked, *argv],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def device_config(tmp_path: Path) -> list[str]:
    config = tmp_path / "device.toml"
    config.write_text('[device]\nserial_number = "EA-LAB-0042"\n')
    return ["--config", str(config), "--state-dir", str(tmp_path / "state")]


def test_technician_commands_run_without_the_vision_extra(
    tmp_path: Path, device_config: list[str]
) -> None:
    commands = (
        ["--help"],  # builds every command's parser: imports every drivers/cli/cmd_*.py
        ["config", "check", "config/agent.toml"],
        ["logs", "pull", "--help"],
        ["provision", "label", *device_config],
        # Both open the state through the composition root, every feature built (CLI mode).
        ["consent", "show", *device_config],
        ["logs", "bundle", *device_config, "--output", str(tmp_path / "bundle.zip")],
    )
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda argv: _cli(tmp_path, *argv), commands))
    for argv, result in zip(commands, results, strict=True):
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, argv
    assert "sn=EA-LAB-0042" in results[3].stdout  # the label payload
    assert (tmp_path / "bundle.zip").stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [["enrol", "face", "bob", "photo.png"], ["match", "photo.png"], ["run"]],
    ids=["enrol", "match", "run"],
)
def test_vision_commands_name_the_extra_in_one_line(
    tmp_path: Path, device_config: list[str], argv: list[str]
) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = _cli(tmp_path, *[a if a != "photo.png" else str(tmp_path / a) for a in argv],
                  *device_config)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("edge-agent: error: this command needs ")
    assert "install edge-agent[vision]" in lines[0]
