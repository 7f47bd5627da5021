"""The exact retrievers' search of one index partition: every cosine computed, the attribute rules applied.

A chunk of queries times the partition's rows is one product (sparse for TF-IDF, dense for vectors),
densified to (chunk, rows) so the attribute rules mask it before the top-k is taken. Memory is bounded by the
partition and the chunk, whatever the rules exclude. For a lexical retriever, pairs that share no term
(cosine 0) are not candidates.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from scipy import sparse

from pss_ops.search.eligibility import Eligibility

# Scores densified at once: queries x rows of float32, 32 MB.
SCORE_BLOCK = 8 << 20
# Pairs scored at once by pair_scores.
PAIR_BLOCK = 65_536

# A retriever's rows: CSR for TF-IDF, a float32 array for vectors; both unit rows, so a product is the cosine.
Matrix: TypeAlias = "sparse.csr_matrix | np.ndarray"


def exact_search(
    queries: Matrix, rows: Matrix, fetch: int, eligibility: Eligibility | None, *, positive_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `fetch` eligible rows by cosine (unit rows): (scores, rows), best first, -1 where fewer exist."""
    n = rows.shape[0]
    scores = np.full((queries.shape[0], fetch), -np.inf, dtype=np.float32)
    found = np.full((queries.shape[0], fetch), -1, dtype=np.int64)
    take = min(fetch, n)
    if take == 0:
        return scores, found
    transposed = rows.T.tocsr() if isinstance(rows, sparse.csr_matrix) else np.ascontiguousarray(rows.T)
    chunk = max(1, SCORE_BLOCK // n)
    for start in range(0, queries.shape[0], chunk):
        stop = min(start + chunk, queries.shape[0])
        product = queries[start:stop] @ transposed
        # Unit rows: a float32 sum of products can pass 1 by rounding, and the cosine cannot.
        block = np.clip(product.toarray() if sparse.issparse(product) else np.asarray(product), -1.0, 1.0).astype(np.float32, copy=False)
        if positive_only:
            block[block <= 0] = -np.inf
        if eligibility is not None and eligibility.has_rules:
            block[~eligibility.mask(np.arange(start, stop))] = -np.inf
        top = np.argpartition(-block, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (stop - start, 1))
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        scores[start:stop, :take] = top_scores
        found[start:stop, :take] = np.where(np.isfinite(top_scores), top, -1)
    return scores, found


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
