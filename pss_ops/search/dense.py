"""The dense retriever's filter-aware search of one index (search.indexes): the attribute rules applied during the search.

Per group of queries that share their rule values (search.eligibility), the cheapest exact-enough way:
- few eligible rows (a selective filter, or a small partition): exact search over just those rows, or, when most
  rows are eligible (a small partition where each seller has a few items), one masked exact pass for all such queries;
- a short exclusion list (the query's own seller holds a few items): one batched index search over-fetched by the
  longest such list, the excluded rows dropped;
- otherwise the index with a faiss IDSelector, so the graph or list scan itself skips ineligible rows.
A query the index still returns short of its eligible rows is searched again exactly over them (the fallback), so no
query is short of k while k eligible candidates exist. Memory is bounded by the partition and a query chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from pss_ops.manifests import IndexSpec
from pss_ops.search.eligibility import Eligibility, QueryGroup
from pss_ops.search.exact import masked_exact
from pss_ops.search.indexes import distances_per_query, search

# Scores computed at once in an exact search: queries x eligible rows, 32 MB of float32.
EXACT_BLOCK = 8 << 20
# Eligible rows gathered at once for an exact search (16k rows of 1,408 floats: 92 MB).
ROW_BLOCK = 16_384


@dataclass
class DenseSearchStats:
    """How the queries of one search were answered."""

    exact: int = 0
    selector: int = 0
    exclusion_list: int = 0
    fallback: int = 0
    without_candidates: set[int] = field(default_factory=set)


def exact_over(queries: np.ndarray, base: np.ndarray, rows: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `fetch` of the given rows by inner product, best first; missing slots are -1.

    The eligible rows are gathered ROW_BLOCK at a time and the blocks' results merged exactly, so memory is
    bounded by the block and the query chunk, not by how many rows are eligible.
    """
    take = min(fetch, len(rows))
    if take == 0 or len(queries) == 0:
        return np.full((len(queries), fetch), -np.inf, np.float32), np.full((len(queries), fetch), -1, np.int64)
    heap = faiss.ResultHeap(len(queries), take, keep_max=True)
    for first in range(0, len(rows), ROW_BLOCK):
        block_rows = rows[first : first + ROW_BLOCK]
        eligible = base[block_rows]
        width = min(take, len(block_rows))
        scores = np.empty((len(queries), width), np.float32)
        found = np.empty((len(queries), width), np.int64)
        chunk = max(1, EXACT_BLOCK // len(block_rows))
        for start in range(0, len(queries), chunk):
            block = queries[start : start + chunk] @ eligible.T
            top = (
                np.argpartition(-block, width - 1, axis=1)[:, :width]
                if width < len(block_rows)
                else np.tile(np.arange(width), (len(block), 1))
            )
            scores[start : start + chunk] = np.take_along_axis(block, top, axis=1)
            found[start : start + chunk] = block_rows[top]
        heap.add_result(scores, found)
    heap.finalize()
    return _pad(heap.D, heap.I, fetch), _pad(heap.I, heap.I, fetch, fill=-1)


def _selector(group: QueryGroup) -> tuple[Any, list[object]]:
    """An IDSelector admitting only the group's eligible rows (and the objects to keep alive while it is used)."""
    if group.allowed is not None:
        inner = faiss.IDSelectorBatch(group.allowed.astype(np.int64))
        return inner, [inner]
    inner = faiss.IDSelectorBatch(np.asarray(group.excluded, dtype=np.int64))
    outer = faiss.IDSelectorNot(inner)
    return outer, [inner, outer]


def filtered_search(
    index: faiss.Index, queries: np.ndarray, fetch: int, spec: IndexSpec, base: Callable[[], np.ndarray], eligibility: Eligibility | None
) -> tuple[np.ndarray, np.ndarray, DenseSearchStats]:
    """Each query's best `fetch` eligible rows of the index: (scores, rows), best first, -1 where fewer exist.

    `base` gives the index's vectors in row order (exact searches read them); it is called only when one is needed.
    """
    stats = DenseSearchStats()
    rows = int(index.ntotal)
    if eligibility is None or not eligibility.has_rules:
        scores, found = search(index, queries, min(fetch, rows), spec.search_effort)
        return _pad(scores, found, fetch), _pad(found, found, fetch, fill=-1), stats
    vectors = base()
    scores = np.full((len(queries), fetch), -np.inf, dtype=np.float32)
    found = np.full((len(queries), fetch), -1, dtype=np.int64)
    # What one index query costs in distance computations, unfiltered; exact search of n rows costs n.
    index_cost = distances_per_query(spec, rows, fetch)
    listed: list[QueryGroup] = []
    masked: list[np.ndarray] = []
    groups = list(eligibility.groups())
    for group in groups:
        count = group.eligible_count(rows)
        if count == 0:
            stats.without_candidates.update(group.positions.tolist())
            continue
        # A filter admitting a share f of the rows makes a graph explore about 1/f times more, and leaves an inverted
        # file's probed lists a share f of their rows: exact is cheaper once the eligible rows number fewer than that.
        if count * count / rows <= index_cost:
            stats.exact += len(group.positions)
            if count > rows // 2:
                # Most rows eligible (a seller with a few items): one masked pass for all such queries, below.
                masked.append(group.positions)
                continue
            s, f = exact_over(queries[group.positions], vectors, group.eligible_rows(rows), fetch)
        elif group.excluded is not None and len(group.excluded) <= fetch:
            listed.append(group)
            stats.exclusion_list += len(group.positions)
            continue
        else:
            stats.selector += len(group.positions)
            selector, keep_alive = _selector(group)
            s, f = search(index, queries[group.positions], min(fetch, count), spec.search_effort, selector)
            del keep_alive
            s, f = _pad(s, f, fetch), _pad(f, f, fetch, fill=-1)
        scores[group.positions], found[group.positions] = s, f
    if listed:
        positions = np.concatenate([g.positions for g in listed])
        extra = max(len(g.excluded) for g in listed if g.excluded is not None)
        wide = min(rows, fetch + extra)
        s, f = search(index, queries[positions], wide, spec.search_effort)
        ok = eligibility.mask(positions, f)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :fetch]
        s = np.where(np.take_along_axis(ok, order, axis=1), np.take_along_axis(s, order, axis=1), -np.inf)
        f = np.where(np.take_along_axis(ok, order, axis=1), np.take_along_axis(f, order, axis=1), -1)
        scores[positions], found[positions] = _pad(s, f, fetch), _pad(f, f, fetch, fill=-1)
    if masked:
        positions = np.concatenate(masked)
        s, f = masked_exact(
            queries[positions], vectors, fetch, lambda start, stop: eligibility.mask(positions[start:stop]), positive_only=False
        )
        scores[positions], found[positions] = s, f
    # The fallback: the index (behind a selector, or over-fetched) can come back short of the eligible rows.
    for group in groups:
        count = group.eligible_count(rows)
        if count == 0:
            continue
        short = group.positions[(found[group.positions] >= 0).sum(axis=1) < min(fetch, count)]
        if len(short):
            scores[short], found[short] = exact_over(queries[short], vectors, group.eligible_rows(rows), fetch)
            stats.fallback += len(short)
    return scores, found, stats


def _pad(values: np.ndarray, found: np.ndarray, width: int, fill: float = -np.inf) -> np.ndarray:
    """Results widened to `width` columns; faiss marks missing slots with id -1."""
    out = np.full((len(values), width), fill, dtype=values.dtype)
    out[:, : values.shape[1]] = np.where(found >= 0, values, fill)
    return out
