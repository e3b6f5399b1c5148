from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.broker import Broker

# Property tests.  Speed belongs in `make bench`, not in a test: no per-example deadline
# and no too-slow health check, which fail on a loaded machine rather than on a bug.  The
# default ("ci", what `make test` runs) draws the same examples on every run, so a red CI
# run is reproducible and never a roll of the dice; `make fuzz` ("explore") draws new
# random examples on every run and keeps the failing ones in .hypothesis/ to replay.
_QUIET_UNDER_LOAD = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, print_blob=True, **_QUIET_UNDER_LOAD)
settings.register_profile("explore", print_blob=True, **_QUIET_UNDER_LOAD)
settings.load_profile(os.environ.get("EDGE_AGENT_HYPOTHESIS", "ci"))

# The reference vectors live in the repository, so a clone anywhere runs every test.
VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"
# Every vector a test reads, relative to VECTORS; tests/test_vectors_present.py checks them.
EXPECTED_VECTORS = (
    *(f"suit/example{n}.txt" for n in range(6)),
    "suit/public_key_es256.pem",
    "wsdiscovery/probe_response_real.xml",
    "improv/vectors.txt",
)


def vector_path(relative: str | pathlib.Path) -> pathlib.Path:
    """The vector file at ``relative`` under tests/vectors; a missing one fails the test."""
    path = VECTORS / relative
    if not path.is_file():
        pytest.fail(
            f"test vector {relative} is missing: expected {path} (the reference vectors are "
            "part of the repository under tests/vectors/; restore it from git)",
            pytrace=False,
        )
    return path


@pytest.fixture
def broker(tmp_path: pathlib.Path) -> Iterator[Broker]:
    """A fresh real mosquitto on a free 127.0.0.1 port, stopped after the test."""
    instance = Broker(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
