"""The reference vectors are in the repository, and a missing one fails rather than skips."""

from __future__ import annotations

import pytest

from tests.conftest import EXPECTED_VECTORS, VECTORS, vector_path

# A line each vector file must contain, so an emptied or wrong file is caught too.
MARKERS = {
    **{f"suit/example{n}.txt": "Envelope with COSE authentication object:" for n in range(6)},
    "suit/public_key_es256.pem": "-----BEGIN PUBLIC KEY-----",
    "wsdiscovery/probe_response_real.xml": "ProbeMatches",
    "improv/vectors.txt": "wifi_settings",
}


def test_the_vector_directory_is_in_the_repository() -> None:
    assert VECTORS.is_dir(), f"{VECTORS} is missing"
    assert sorted(p.name for p in VECTORS.iterdir() if p.is_dir()) == [
        "improv",
        "suit",
        "wsdiscovery",
    ]


@pytest.mark.parametrize("relative", EXPECTED_VECTORS)
def test_every_expected_vector_file_exists(relative: str) -> None:
    path = VECTORS / relative
    assert path.is_file(), f"test vector {relative} is missing from {VECTORS}"
    assert MARKERS[relative] in path.read_text(), f"{relative} is not the reference vector"


def test_every_expected_vector_is_checked_here() -> None:
    assert sorted(MARKERS) == sorted(EXPECTED_VECTORS)


def test_a_missing_vector_fails_instead_of_skipping() -> None:
    with pytest.raises(pytest.fail.Exception, match="missing"):
        vector_path("suit/no-such-example.txt")
