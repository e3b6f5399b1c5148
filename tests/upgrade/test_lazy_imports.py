"""The always-on upgrade service must not load ``cryptography`` (~8 MiB RSS) at boot.

Keys are parsed and signatures checked only when a manifest is verified, every
few hours; the import happens then.  Checked in a fresh interpreter, since the
test session itself has long since imported everything.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import pathlib
    import sys

    import drivers.upgrade.service as service
    from agent.config import AgentConfig


    upgrade = service.build_service(AgentConfig(state_dir=pathlib.Path(sys.argv[1])), lambda: True)
    upgrade.start()  # boot-time reconciliation with the bootloader
    upgrade.wait(30.0)
    upgrade.tick(0.0)
    upgrade.stop()
    loaded = sorted(
        m for m in sys.modules if m.split(".")[0] == "cryptography" or m == "http.client"
    )
    print(" ".join(loaded))
    """
)


def test_building_and_starting_the_service_loads_no_cryptography(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=pathlib.Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert not any(m.startswith("cryptography") for m in loaded), loaded
    assert "http.client" not in loaded, loaded
