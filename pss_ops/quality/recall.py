"""Recall@k against exact search with ties counted: the one definition the summary, the tuner and the benchmarks use."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Scores within this of the exact k-th score are ties: HNSW and brute force round the same cosine differently,
# and any item tied with the k-th is as right an answer as the one exact search happened to list.
TIE_TOLERANCE = 1e-5


def tie_hits(found: Iterable[np.ndarray], exact: Iterable[np.ndarray]) -> tuple[int, int]:
    """(hits, wanted) over queries: found scores reaching the exact k-th score, out of the exact results there are.

    found[i] holds query i's scores as returned (its top k, any order); exact[i] its exact top-k scores, best
    first, holding only results that exist. A query with no exact result counts for nothing.
    """
    hits = wanted = 0
    for got, truth in zip(found, exact, strict=True):
        if len(truth):
            hits += int(np.sum(np.asarray(got) >= truth[-1] - TIE_TOLERANCE))
            wanted += len(truth)
    return hits, wanted


def recall_with_ties(found: Iterable[np.ndarray], exact: Iterable[np.ndarray]) -> float:
    """Recall@k with ties counted as hits (see tie_hits); nan when no query has an exact result."""
    hits, wanted = tie_hits(found, exact)
    return hits / wanted if wanted else float("nan")
