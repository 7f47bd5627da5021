"""The exact retrievers' search of one index partition: every cosine computed, the attribute rules applied.

A chunk of queries times the partition's rows is one product (sparse for TF-IDF, dense for vectors),
densified to (chunk, rows) so the attribute rules mask it before the top-k is taken. Memory is bounded by the
partition and the chunk, whatever the rules exclude. For a lexical retriever, pairs that share no term
(cosine 0) are not candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from scipy import sparse

from pss_ops.resources import usable_cpus
from pss_ops.search.eligibility import Eligibility

# Scores densified at once: queries x rows of float32, 32 MB.
SCORE_BLOCK = 8 << 20
# Pairs scored at once by pair_scores.
PAIR_BLOCK = 65_536

# A retriever's rows: CSR for TF-IDF, a float32 array for vectors; both unit rows, so a product is the cosine.
Matrix: TypeAlias = "sparse.csr_matrix | np.ndarray"


def exact_search(
    queries: Matrix,
    rows: Matrix,
    fetch: int,
    eligibility: Eligibility | None,
    *,
    positive_only: bool,
    also: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's best `fetch` eligible rows by cosine (unit rows): (scores, rows), best first, -1 where fewer exist.

    `also` (queries x w row numbers, -1 for none) names rows another retriever found: their cosines are read off
    the same products and returned third (NaN where none), so the union needs no second pass over these pairs.
    Queries whose rules admit at most half the rows (the queries of a seller holding most of the partition) are
    searched against just those rows, a product that much smaller; the rest against every row, masked.
    """
    n, count = rows.shape[0], queries.shape[0]
    also = np.full((count, 0), -1, np.int64) if also is None else also
    out = _Results(
        np.full((count, fetch), -np.inf, np.float32), np.full((count, fetch), -1, np.int64), np.full(also.shape, np.nan, np.float32)
    )
    if eligibility is None or not eligibility.has_rules:
        _masked_top(queries, rows, fetch, positive_only, None, also, out)
        return out.scores, out.found, out.also
    wide: list[np.ndarray] = []
    for group in eligibility.groups():
        eligible_count = group.eligible_count(n)
        if eligible_count == 0:
            continue
        if eligible_count > n // 2:
            wide.append(group.positions)
            continue
        eligible = group.eligible_rows(n)
        # Rows the other retriever found are eligible too (its search applied the same rules): renumber them.
        wanted = also[group.positions]
        local = np.minimum(np.searchsorted(eligible, wanted), len(eligible) - 1)
        local = np.where((wanted >= 0) & (eligible[local] == wanted), local, -1)
        part = _Results.empty(len(group.positions), fetch, local.shape[1])
        _masked_top(queries[group.positions], rows[eligible], fetch, positive_only, None, local, part)
        out.scores[group.positions], out.also[group.positions] = part.scores, part.also
        out.found[group.positions] = np.where(part.found >= 0, eligible[np.maximum(part.found, 0)], -1)
    if wide:
        positions = np.concatenate(wide)
        part = _Results.empty(len(positions), fetch, also.shape[1])
        _masked_top(
            queries[positions],
            rows,
            fetch,
            positive_only,
            lambda start, stop: eligibility.mask(positions[start:stop]),
            also[positions],
            part,
        )
        out.scores[positions], out.found[positions], out.also[positions] = part.scores, part.found, part.also
    return out.scores, out.found, out.also


def masked_exact(
    queries: Matrix, rows: Matrix, fetch: int, mask: Callable[[int, int], np.ndarray] | None, *, positive_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `fetch` rows by cosine in one pass over every row; mask(start, stop) says which are eligible."""
    out = _Results.empty(queries.shape[0], fetch, 0)
    _masked_top(queries, rows, fetch, positive_only, mask, np.full((queries.shape[0], 0), -1, np.int64), out)
    return out.scores, out.found


@dataclass
class _Results:
    scores: np.ndarray
    found: np.ndarray
    also: np.ndarray

    @classmethod
    def empty(cls, count: int, fetch: int, also_width: int) -> _Results:
        return cls(
            np.full((count, fetch), -np.inf, np.float32),
            np.full((count, fetch), -1, np.int64),
            np.full((count, also_width), np.nan, np.float32),
        )


def _masked_top(
    queries: Matrix,
    rows: Matrix,
    fetch: int,
    positive_only: bool,
    mask: Callable[[int, int], np.ndarray] | None,
    also: np.ndarray,
    out: _Results,
) -> None:
    """Fill `out` a chunk of queries at a time: best `fetch` rows, and the cosines of the `also` rows; mask(start, stop) -> eligible."""
    n = rows.shape[0]
    take = min(fetch, n)
    if take == 0:
        return
    # A dense transpose stays a view: BLAS reads it in place.
    transposed = rows.T.tocsr() if isinstance(rows, sparse.csr_matrix) else rows.T
    # SCORE_BLOCK is what all threads hold at once, so a thread's chunk is its share.
    workers = usable_cpus()
    chunk = max(1, SCORE_BLOCK // (n * workers))
    starts = range(0, queries.shape[0], chunk)

    def one_chunk(start: int) -> None:
        stop = min(start + chunk, queries.shape[0])
        product = queries[start:stop] @ transposed
        dense = product.toarray() if sparse.issparse(product) else product  # type: ignore[union-attr]
        del product
        # Unit rows: a float32 sum of products can pass 1 by rounding, and the cosine cannot. In place: no copies.
        block = np.asarray(dense, dtype=np.float32)
        np.clip(block, -1.0, 1.0, out=block)
        wanted = also[start:stop]
        out.also[start:stop] = np.where(wanted >= 0, np.take_along_axis(block, np.maximum(wanted, 0), axis=1), np.nan)
        if positive_only:
            block[block <= 0] = -np.inf
        if mask is not None:
            block[~mask(start, stop)] = -np.inf
        np.negative(block, out=block)  # argpartition finds the smallest: negate in place rather than copy
        top = np.argpartition(block, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (stop - start, 1))
        top_scores = -np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        out.scores[start:stop, :take] = top_scores
        out.found[start:stop, :take] = np.where(np.isfinite(top_scores), top, -1)

    # Chunks write disjoint rows of `out`; scipy's sparse product and numpy's sort release the GIL, so threads
    # run them in parallel (2.4x on 2 cores for TF-IDF rows).
    if workers == 1 or len(starts) == 1:
        for start in starts:
            one_chunk(start)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(starts))) as pool:
        for _ in pool.map(one_chunk, starts):
            pass


def pair_scores(queries: Matrix, rows: Matrix, query_rows: np.ndarray, candidate_rows: np.ndarray) -> np.ndarray:
    """The cosine of each (query row, candidate row) pair of unit rows, in blocks of pairs."""
    out = np.zeros(len(query_rows), dtype=np.float32)
    for start in range(0, len(query_rows), PAIR_BLOCK):
        q = queries[query_rows[start : start + PAIR_BLOCK]]
        c = rows[candidate_rows[start : start + PAIR_BLOCK]]
        out[start : start + PAIR_BLOCK] = (
            np.asarray(q.multiply(c).sum(axis=1)).ravel() if sparse.issparse(q) else np.einsum("ij,ij->i", q, c)
        )
    return np.clip(out, -1.0, 1.0)
