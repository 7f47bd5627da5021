"""Step 6, post_filter: keep candidates that pass the attribute rules and score floor, rank the top k."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import layout, storage
from pss_ops.config import PostFilterConfig
from pss_ops.manifests import FilteredPartition, QueriedPartition, RunContext
from pss_ops.timing import timed
from pss_ops.warehouse.publish import SIMILAR_ITEMS_COLUMNS

log = logging.getLogger(__name__)


def filter_mask(table: pa.Table, rules: PostFilterConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Which candidate rows survive, and how many each rule removed (counted in order)."""
    survive = np.ones(table.num_rows, dtype=bool)
    removed: dict[str, int] = {}

    def apply(label: str, passes: np.ndarray) -> None:
        nonlocal survive
        removed[label] = int((survive & ~passes).sum())
        survive &= passes

    scores = table.column("score").to_numpy()
    apply("min_score", scores >= rules.min_score)
    # NULL attributes can prove neither sameness nor difference, so they fail both rules.
    for attribute in rules.same:
        apply(f"same:{attribute}", _compare(table, attribute, pc.equal))
    for attribute in rules.different:
        apply(f"different:{attribute}", _compare(table, attribute, pc.not_equal))
    return survive, removed


def _compare(table: pa.Table, attribute: str, op: Callable[[Any, Any], Any]) -> np.ndarray:
    """op(query's attribute, candidate's attribute) per row, False where either is NULL."""
    verdict = pc.fill_null(op(table.column(f"q_{attribute}"), table.column(f"c_{attribute}")), False)
    return np.asarray(verdict.to_numpy(zero_copy_only=False), dtype=bool)


def rank_top_k(table: pa.Table, survive: np.ndarray, k: int) -> tuple[pa.Table, np.ndarray]:
    """Rows ranked 1..k per query among survivors, in the search's score order."""
    kept = table.filter(pa.array(survive))
    queries = kept.column("query_item_id")
    n = len(queries)
    # Rows arrive grouped by query and sorted by score within a query, so a running count ranks them.
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = pc.not_equal(queries.slice(1), queries.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    group = np.cumsum(starts) - 1
    first_row = np.flatnonzero(starts)
    rank = np.arange(n) - first_row[group] + 1 if n else np.zeros(0, np.int64)
    within = rank <= k
    return kept.filter(pa.array(within)), rank[within]


def post_filter_partition(ctx: RunContext, queried: QueriedPartition) -> FilteredPartition:
    """Apply the post-filter to one queried partition and write rows in the warehouse shape."""
    config = ctx.config
    with timed(f"post_filter {queried.name}") as timer:
        table = storage.read_parquet(queried.uri)
        survive, removed = filter_mask(table, config.post_filter)
        top, rank = rank_top_k(table, survive, config.k)
        n = top.num_rows
        output = pa.table(
            {
                "application": pa.array([ctx.application] * n, pa.string()),
                "snapshot_date": pa.array([ctx.snapshot_date] * n, pa.date32()),
                "category": top.column("category"),
                "query_item_id": top.column("query_item_id"),
                "candidate_item_id": top.column("candidate_item_id"),
                "rank": pa.array(rank.astype(np.int32)),
                "score": top.column("score"),
                "run_id": pa.array([ctx.run_id] * n, pa.string()),
            }
        ).select(list(SIMILAR_ITEMS_COLUMNS))
        # Ranks run 1..rows within a query, so a query has all k rows exactly when it has a rank k.
        queries_short = queried.queries - int((rank == config.k).sum())
        uri = layout.filtered(ctx.run_uri, queried.name)
        storage.write_parquet(uri, output)
    result = FilteredPartition(
        name=queried.name,
        uri=uri,
        rows=n,
        queries=queried.queries,
        queries_short_of_k=queries_short,
        candidates_removed=removed,
        seconds=timer.seconds,
    )
    result.write(layout.filter_manifest(ctx.run_uri, queried.name))
    log.info("post_filter %s: %d rows, %d queries short of k=%d, removed %s", queried.name, n, queries_short, config.k, removed)
    return result
