"""Gallery search equals brute force; storage survives failed writes."""

from __future__ import annotations

import os
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import BadDataError, DecodeError, DeviceIOError, NotFoundError, PolicyError
from agent.matching import search as search_module
from agent.matching.gallery import Gallery, trimmed_mean
from agent.matching.search import l2_normalise, quantise_rows, top_k
from agent.matching.settings import GalleryStorage


def _brute(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ matrix.T
    return -np.sort(-scores, axis=1)[:, :k]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 400),
    dim=st.integers(1, 24),
    queries=st.integers(1, 5),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_float32_top_k_equals_brute_force(
    rows: int, dim: int, queries: int, k: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    matrix = l2_normalise(rng.standard_normal((rows, dim)))
    query = l2_normalise(rng.standard_normal((queries, dim)))
    result = top_k(matrix, query, k)
    expected = _brute(matrix, query, k)
    found = min(k, rows)
    np.testing.assert_allclose(result.scores[:, :found], expected, rtol=1e-5, atol=1e-5)
    # Each reported row really has the reported score.
    for q in range(queries):
        got = matrix[result.rows[q, :found]] @ query[q]
        np.testing.assert_allclose(got, result.scores[q, :found], rtol=1e-5, atol=1e-5)
    assert (result.rows[:, found:] == -1).all()


@settings(max_examples=40, deadline=None)
@given(
    identities=st.integers(2, 40),
    per=st.integers(1, 6),
    dim=st.integers(8, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_int8_ranking_stays_within_quantisation_tolerance(
    identities: int, per: int, dim: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((identities, dim)))
    owners = np.repeat(np.arange(identities), per)
    matrix = l2_normalise(centres[owners] + 0.3 * rng.standard_normal((owners.size, dim)))
    codes, scales = quantise_rows(matrix)
    query = l2_normalise(centres[rng.integers(identities)] + 0.2 * rng.standard_normal(dim))
    exact = matrix @ query
    result = top_k(codes, query, 1, scales=scales)
    chosen = int(result.rows[0, 0])
    # |x - code*scale| <= scale/2 per component, so any score is off by at most this.
    bound = float(scales.max()) / 2 * float(np.abs(query).sum())
    assert exact[chosen] >= exact.max() - 2 * bound - 1e-6
    if exact.max() - np.sort(exact)[-2] > 2 * bound and owners[chosen] != owners[exact.argmax()]:
        pytest.fail("int8 picked another identity despite a margin above the tolerance")


def test_parallel_scan_matches_single_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "PARALLEL_MIN_ROWS", 10)
    monkeypatch.setattr(search_module, "SELECT_ROWS", 64)
    rng = np.random.default_rng(3)
    matrix = l2_normalise(rng.standard_normal((5000, 16)))
    queries = l2_normalise(rng.standard_normal((7, 16)))
    codes, scales = quantise_rows(matrix)
    with ThreadPoolExecutor(3) as pool:
        for mat, sc in ((matrix, None), (codes, scales)):
            single = top_k(mat, queries, 5, scales=sc)
            parallel = top_k(mat, queries, 5, scales=sc, executor=pool, workers=3)
            np.testing.assert_array_equal(single.rows, parallel.rows)
    np.testing.assert_allclose(single.scores, _brute(matrix, queries, 5), atol=0.02)


def test_trimmed_template_ignores_one_outlier() -> None:
    rng = np.random.default_rng(1)
    centre = l2_normalise(rng.standard_normal(32))
    samples = l2_normalise(centre + 0.1 * rng.standard_normal((9, 32)))
    polluted = np.vstack([samples, -centre[None, :] * 5])
    robust = l2_normalise(trimmed_mean(polluted, 0.2))
    plain = l2_normalise(polluted.mean(axis=0))
    assert float(robust @ centre) > 0.95
    assert float(robust @ centre) > float(plain @ centre)


@pytest.mark.parametrize("storage", list(GalleryStorage))
def test_enrol_remove_rename_persist(tmp_path: pathlib.Path, storage: GalleryStorage) -> None:
    rng = np.random.default_rng(2)
    gallery = Gallery.open(tmp_path / "g", 16, storage, max_samples_per_identity=5)
    alice = gallery.enrol("alice", rng.standard_normal((3, 16)))
    gallery.enrol("bob", rng.standard_normal((2, 16)), label="Bob")
    gallery.enrol("alice", rng.standard_normal((1, 16)))
    with pytest.raises(PolicyError):
        gallery.enrol("alice", rng.standard_normal((2, 16)))
    reopened = Gallery.open(tmp_path / "g", 16, storage)
    assert [(r.name, r.label) for r in reopened.identities()] == [("alice", None), ("bob", "Bob")]
    assert reopened.sample_counts() == {alice.number: 4, alice.number + 1: 2}
    probe = reopened.store.float_rows(np.array([4]))[0]
    assert reopened.identify(probe, 0.5).identity == reopened.find("bob")
    reopened.rename("bob", "robert", label="")
    reopened.remove("alice")
    again = Gallery.open(tmp_path / "g", 16, storage)
    assert [(r.name, r.label) for r in again.identities()] == [("robert", None)]
    assert again.store.count == 2
    with pytest.raises(NotFoundError):
        again.remove("alice")
    files = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert all(not name.startswith("vectors-0") for name in files), files


def test_failed_commit_leaves_old_gallery_loadable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    gallery = Gallery.open(tmp_path / "g", 8)
    gallery.enrol("alice", rng.standard_normal((2, 8)))
    before = np.array(gallery.store.vectors())

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(DeviceIOError):
        gallery.enrol("bob", rng.standard_normal((3, 8)))
    with pytest.raises(DeviceIOError):
        gallery.remove("alice")
    monkeypatch.undo()
    reopened = Gallery.open(tmp_path / "g", 8)
    assert [r.name for r in reopened.identities()] == ["alice"]
    np.testing.assert_array_equal(reopened.store.vectors(), before)
    # The in-memory gallery rolled back too and keeps working.
    assert [r.name for r in gallery.identities()] == ["alice"]
    gallery.enrol("carol", rng.standard_normal((1, 8)))
    assert [r.name for r in Gallery.open(tmp_path / "g", 8).identities()] == ["alice", "carol"]


def test_rows_written_without_commit_are_ignored(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(5)
    gallery = Gallery.open(tmp_path / "g", 8)
    gallery.enrol("alice", rng.standard_normal((2, 8)))
    # A crash between writing rows and committing the manifest.
    gallery.store.append(l2_normalise(rng.standard_normal((50, 8))), 99)
    reopened = Gallery.open(tmp_path / "g", 8)
    assert reopened.store.count == 2
    assert set(reopened.store.owners().tolist()) == {0}


def test_erase_overwrites_and_removes_every_file(tmp_path: pathlib.Path) -> None:
    gallery = Gallery.open(tmp_path / "g", 8, GalleryStorage.INT8)
    gallery.enrol("alice", np.ones((2, 8)))
    assert gallery.export_personal_data()["identities"]
    assert gallery.erase_personal_data() == 1
    assert not (tmp_path / "g").exists()
    assert Gallery.open(tmp_path / "g", 8).identities() == []


def test_switching_storage_converts_the_gallery(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(6)
    vectors = l2_normalise(rng.standard_normal((4, 32)))
    Gallery.open(tmp_path / "g", 32).enrol("alice", vectors)
    converted = Gallery.open(tmp_path / "g", 32, GalleryStorage.INT8)
    assert converted.store.vectors().dtype == np.int8
    np.testing.assert_allclose(converted.store.float_rows(np.arange(4)), vectors, atol=0.01)


def test_refresh_sees_enrolments_of_another_process(tmp_path: pathlib.Path) -> None:
    running = Gallery.open(tmp_path / "g", 8)
    assert running.refresh() is False
    Gallery.open(tmp_path / "g", 8).enrol("alice", np.ones((1, 8)))
    assert running.refresh() is True
    assert [r.name for r in running.identities()] == ["alice"]
    assert running.refresh() is False


def test_corrupt_manifest_is_a_clear_decode_error(tmp_path: pathlib.Path) -> None:
    Gallery.open(tmp_path / "g", 8).enrol("alice", np.ones((1, 8)))
    with pytest.raises(DecodeError, match="16-d"):
        Gallery.open(tmp_path / "g", 16)
    (tmp_path / "g" / "manifest.json").write_bytes(b'{"format": 1, "dim": "x"')
    with pytest.raises(DecodeError, match="corrupt"):
        Gallery.open(tmp_path / "g", 8)
    (tmp_path / "g" / "manifest.json").write_bytes(
        b'{"format":1,"dim":8,"storage":"float32","generation":0,"count":999,'
        b'"next_number":1,"identities":[]}'
    )
    with pytest.raises(DecodeError, match="truncated"):
        Gallery.open(tmp_path / "g", 8)


def test_bad_samples_and_names_are_rejected(tmp_path: pathlib.Path) -> None:
    gallery = Gallery.open(tmp_path / "g", 4)
    with pytest.raises(BadDataError):
        gallery.enrol("alice", np.zeros((1, 4)))
    with pytest.raises(BadDataError):
        gallery.enrol("alice", np.full((1, 4), np.nan))
    with pytest.raises(BadDataError):
        gallery.enrol("alice", np.ones((1, 5)))
    with pytest.raises(BadDataError):
        gallery.enrol("x" * 65, np.ones((1, 4)))
    with pytest.raises(BadDataError):
        gallery.enrol("bad\nname", np.ones((1, 4)))
    assert gallery.identities() == []
