"""The lexical retriever's search of one index partition: exact TF-IDF cosines by sparse products, rules applied.

Exact rather than approximate: a chunk of queries times the partition's TF-IDF rows is one sparse product,
densified to (chunk, rows) so the attribute rules mask it before the top-k is taken. Memory is bounded by the
partition and the chunk, whatever the rules exclude. Pairs that share no term (cosine 0) are not candidates.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from pss_ops.search.eligibility import Eligibility

# Scores densified at once: queries x rows of float32, 32 MB.
SCORE_BLOCK = 8 << 20


def lexical_search(
    queries: sparse.csr_matrix, rows: sparse.csr_matrix, fetch: int, eligibility: Eligibility | None
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `fetch` eligible rows by TF-IDF cosine (> 0): (scores, rows), best first, -1 where fewer exist."""
    n = rows.shape[0]
    scores = np.full((queries.shape[0], fetch), -np.inf, dtype=np.float32)
    found = np.full((queries.shape[0], fetch), -1, dtype=np.int64)
    take = min(fetch, n)
    if take == 0:
        return scores, found
    transposed = rows.T.tocsr()
    chunk = max(1, SCORE_BLOCK // n)
    for start in range(0, queries.shape[0], chunk):
        stop = min(start + chunk, queries.shape[0])
        block = np.minimum((queries[start:stop] @ transposed).toarray(), 1.0)
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


def pair_cosines(queries: sparse.csr_matrix, rows: sparse.csr_matrix, query_rows: np.ndarray, candidate_rows: np.ndarray) -> np.ndarray:
    """The TF-IDF cosine of each (query row, candidate row) pair, in chunks of pairs."""
    out = np.zeros(len(query_rows), dtype=np.float32)
    step = 65_536
    for start in range(0, len(query_rows), step):
        q = queries[query_rows[start : start + step]]
        c = rows[candidate_rows[start : start + step]]
        out[start : start + step] = np.asarray(q.multiply(c).sum(axis=1)).ravel()
    # Unit rows: a float32 sum of products can pass 1 by rounding, and the cosine cannot.
    return np.clip(out, 0.0, 1.0)
