"""Exact top-k inner-product search over a row matrix, block by block.

The hot path is memory-bound: one BLAS matrix-vector (or matrix-matrix) product
per block of rows into a preallocated score buffer, then a threshold filter
against the current k-th best score, so the selection work after the first
block is a compare and a rarely-taken merge.  The full score vector is never
materialised and never argpartitioned.

Rows are split into contiguous ranges, one per worker thread; numpy releases
the GIL inside BLAS and casts, so the workers run in parallel while BLAS itself
is kept single-threaded (see :mod:`agent.matching.blas`).  int8 rows are cast
to float32 in cache-sized chunks just before the product; their per-row scales
are applied to the block's scores.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Rows per selection block: big enough that the per-block Python work is noise.
SELECT_ROWS = 8192
# Rows of int8 cast to float32 per chunk.  Smaller chunks that stay in L2 measured
# slower: per-call overhead of the cast and of the BLAS call dominates (256 rows: 1.5x
# the float32 scan; 4096 rows: 1.0x on one core, 512-d).
CAST_ROWS = 4096
# Below this many rows a single thread is faster than handing out work.
PARALLEL_MIN_ROWS = 65536


@dataclasses.dataclass(frozen=True)
class TopK:
    """Best ``k`` rows per query, best first; ``rows`` is -1 where fewer exist."""

    scores: F32  # shape (queries, k)
    rows: I64  # shape (queries, k)


class _Best:
    """Running top-k of one worker for every query."""

    def __init__(self, queries: int, k: int) -> None:
        self.k = k
        self.scores = np.full((queries, k), -np.inf, dtype=np.float32)
        self.rows = np.full((queries, k), -1, dtype=np.int64)
        self.kth = np.full(queries, -np.inf, dtype=np.float32)

    def offer(self, block: F32, offset: int) -> None:
        """Merge the scores ``block`` (queries x m) of rows ``offset..offset+m``."""
        hits = block > self.kth[:, None]
        for q in np.flatnonzero(hits.any(axis=1)):
            cols = np.flatnonzero(hits[q])
            cand = block[q, cols]
            if cand.shape[0] > self.k:
                keep = np.argpartition(cand, cand.shape[0] - self.k)[-self.k :]
                cols, cand = cols[keep], cand[keep]
            scores = np.concatenate((self.scores[q], cand))
            rows = np.concatenate((self.rows[q], cols.astype(np.int64) + offset))
            keep = np.argpartition(scores, scores.shape[0] - self.k)[-self.k :]
            self.scores[q], self.rows[q] = scores[keep], rows[keep]
            self.kth[q] = self.scores[q].min()


def _scan(
    matrix: npt.NDArray[np.float32] | npt.NDArray[np.int8],
    scales: F32 | None,
    queries: F32,
    span: tuple[int, int],
    k: int,
) -> _Best:
    start, stop = span
    nq = queries.shape[0]
    best = _Best(nq, k)
    single = nq == 1
    vector = queries[0]
    select = SELECT_ROWS if single else max(256, min(SELECT_ROWS, (1 << 20) // nq))
    out_full = np.empty((select, nq), dtype=np.float32)
    cast = np.empty((CAST_ROWS, matrix.shape[1]), dtype=np.float32) if scales is not None else None
    queries_t = np.ascontiguousarray(queries.T)
    for lo in range(start, stop, select):
        hi = min(lo + select, stop)
        m = hi - lo
        out = out_full[:m]
        if cast is None:
            block = matrix[lo:hi]
            if single:
                np.dot(block, vector, out=out[:, 0])
            else:
                np.dot(block, queries_t, out=out)
        else:
            for c in range(lo, hi, CAST_ROWS):
                e = min(c + CAST_ROWS, hi)
                chunk = cast[: e - c]
                np.copyto(chunk, matrix[c:e], casting="unsafe")
                dest = out[c - lo : e - lo]
                if single:
                    np.dot(chunk, vector, out=dest[:, 0])
                else:
                    np.dot(chunk, queries_t, out=dest)
            assert scales is not None
            out *= scales[lo:hi, None]
        best.offer(out.T, lo)
    return best


def _ranges(count: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, count, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def top_k(
    matrix: npt.NDArray[np.float32] | npt.NDArray[np.int8],
    queries: F32,
    k: int,
    *,
    scales: F32 | None = None,
    executor: Executor | None = None,
    workers: int = 1,
) -> TopK:
    """Exact top-``k`` inner products of each row of ``queries`` against ``matrix``.

    ``matrix`` is float32 rows, or int8 rows with ``scales`` (row value = int8 *
    scale).  With an ``executor`` and ``workers`` > 1 the rows are split across
    that many threads.
    """
    if queries.ndim == 1:
        queries = queries[None, :]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    count = matrix.shape[0]
    nq = queries.shape[0]
    k = max(1, k)
    if count == 0:
        return TopK(
            np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        )
    parts = workers if executor is not None and count >= PARALLEL_MIN_ROWS else 1
    ranges = _ranges(count, parts)
    if len(ranges) == 1:
        results = [_scan(matrix, scales, queries, (0, count), k)]
    else:
        assert executor is not None
        scan: Callable[[tuple[int, int]], _Best] = lambda span: _scan(  # noqa: E731
            matrix, scales, queries, span, k
        )
        results = list(executor.map(scan, ranges))
    return _merge(results, k)


def _merge(results: Sequence[_Best], k: int) -> TopK:
    scores = np.concatenate([r.scores for r in results], axis=1)
    rows = np.concatenate([r.rows for r in results], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return TopK(
        np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
    )


def quantise_rows(rows: F32) -> tuple[npt.NDArray[np.int8], F32]:
    """int8 codes and per-row scales with ``codes * scale`` close to ``rows``."""
    peak = np.abs(rows).max(axis=1) if rows.shape[0] else np.zeros(0, np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.rint(rows / scales[:, None]).clip(-127, 127).astype(np.int8)
    return codes, scales


def l2_normalise(rows: npt.NDArray[np.floating]) -> F32:
    """Rows scaled to unit length (zero rows stay zero)."""
    data = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(data, axis=-1, keepdims=True)
    return (data / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
