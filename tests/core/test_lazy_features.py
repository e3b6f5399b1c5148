"""With the camera off, the running agent loads neither OpenCV nor numpy.

The idle-memory goal (`make bench`) depends on it; this keeps an import added
anywhere on the start-up path from quietly undoing it.  ``cryptography`` is
loaded on purpose: every log line is sealed at rest (README "Crypto-erase"),
which costs about 8 MiB of the budget and is the price of the promise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import pathlib, sys
from agent.config import AgentConfig, CameraSettings, MatchingSettings
from drivers.runtime import Agent
config = AgentConfig(
    state_dir=pathlib.Path(sys.argv[1]),
    camera=CameraSettings(enabled=False),
    matching=MatchingSettings(enabled=False),
)
agent = Agent.build(config, environ={})
agent.start()
agent.step()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"cv2", "numpy"})
print("heavy=" + ",".join(heavy))
agent.shutdown()
"""


def test_agent_with_camera_off_does_not_load_vision(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "state")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "heavy="
