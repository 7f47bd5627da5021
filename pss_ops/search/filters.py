"""The post-filter (paper §3.3): which candidates a query may list, and their ranks; every caller uses these rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops.config import AppConfig, PostFilterConfig

ARROW_ARRAYS = (pa.Array, pa.ChunkedArray)


def candidates_per_query(config: AppConfig) -> int:
    """How many candidates each retriever finds per query: more than k, so the fused ranking and min_score choose among them."""
    return config.k * config.post_filter.candidate_multiplier


def attribute_rules(rules: PostFilterConfig) -> Iterator[tuple[str, str, bool]]:
    """(label, attribute, must be the same) for every attribute rule, in the order they are applied and counted."""
    for attribute in rules.same:
        yield f"same:{attribute}", attribute, True
    for attribute in rules.different:
        yield f"different:{attribute}", attribute, False


def attribute_verdict(query_values: Any, candidate_values: Any, *, same: bool) -> np.ndarray:
    """Elementwise (broadcasting) verdict of one attribute rule; NULL proves neither sameness nor difference, so it fails both."""
    if isinstance(query_values, ARROW_ARRAYS) and isinstance(candidate_values, ARROW_ARRAYS):
        # A candidate table's columns, compared in Arrow: no Python object per row (millions per partition).
        compared = (pc.equal if same else pc.not_equal)(query_values, candidate_values)
        return np.asarray(pc.fill_null(compared, False).to_numpy(zero_copy_only=False), dtype=bool)
    q = np.asarray(query_values, dtype=object)
    c = np.asarray(candidate_values, dtype=object)
    known = (q != None) & (c != None)  # noqa: E711 - elementwise NULL test on object arrays
    return np.asarray(known & ((q == c) if same else (q != c)), dtype=bool)


def passes(
    rules: PostFilterConfig, query: Mapping[str, Any], candidate: Mapping[str, Any], scores: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """Which (query, candidate) pairs survive every rule, and how many each rule removed (counted in order).

    query and candidate map each attribute to values that broadcast against scores: per row of a candidate
    table, or a column of queries against a row of candidates.
    """
    survive = np.asarray(scores >= rules.min_score, dtype=bool)
    removed = {"min_score": int(survive.size - survive.sum())}
    for label, attribute, same in attribute_rules(rules):
        verdict = attribute_verdict(query[attribute], candidate[attribute], same=same)
        removed[label] = int((survive & ~verdict).sum())
        survive = survive & verdict
    return survive, removed


def filter_mask(table: pa.Table, rules: PostFilterConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows of a candidate table (score, q_<attribute>, c_<attribute> columns) survive, and what each rule removed."""
    names = [attribute for _, attribute, _ in attribute_rules(rules)]
    return passes(
        rules,
        {a: table.column(f"q_{a}") for a in names},
        {a: table.column(f"c_{a}") for a in names},
        table.column("score").to_numpy(),
    )


def allowed_pairs(rules: PostFilterConfig, queries: pa.Table, candidates: pa.Table, scores: np.ndarray) -> np.ndarray:
    """(queries × candidates) verdicts for id/attribute tables and their score matrix: never the query itself, then every rule."""

    def values(table: pa.Table, column: str) -> np.ndarray:
        return np.asarray(table.column(column).to_pylist(), dtype=object)

    names = [attribute for _, attribute, _ in attribute_rules(rules)]
    survive, _ = passes(
        rules,
        {a: values(queries, a)[:, None] for a in names},
        {a: values(candidates, a)[None, :] for a in names},
        scores,
    )
    return survive & (values(queries, "item_id")[:, None] != values(candidates, "item_id")[None, :])


# (query row, candidate rows, their scores) -> which candidates the query may list.
RowFilter = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def row_filter(rules: PostFilterConfig, attributes: Mapping[str, Sequence[Any]]) -> RowFilter:
    """The post-filter over the rows of a catalog held in memory (training, mining): what a query row may list.

    attributes holds every rule attribute's value per row, None or NaN for NULL (pandas' missing values).
    """
    missing = [a for _, a, _ in attribute_rules(rules) if a not in attributes]
    if missing:
        raise ValueError(f"no values for post-filter attribute(s) {', '.join(missing)}")
    columns = {
        a: np.asarray([None if v is None or v != v else v for v in attributes[a]], dtype=object) for _, a, _ in attribute_rules(rules)
    }

    def listable(query_row: int, candidate_rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        query = {a: values[query_row] for a, values in columns.items()}
        survive, _ = passes(rules, query, {a: values[candidate_rows] for a, values in columns.items()}, np.asarray(scores))
        return survive

    return listable


def top_k_rows(table: pa.Table, survive: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the rows ranked 1..k per query among survivors, in the table's row order, and their ranks."""
    kept = np.flatnonzero(survive)
    queries = table.column("query_item_id").take(pa.array(kept))
    n = len(queries)
    # Rows arrive grouped by query and in ranking order within a query, so a running count ranks them.
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = pc.not_equal(queries.slice(1), queries.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    group = np.cumsum(starts) - 1
    first_row = np.flatnonzero(starts)
    rank = np.arange(n) - first_row[group] + 1 if n else np.zeros(0, np.int64)
    within = rank <= k
    return kept[within], rank[within]


def rank_top_k(table: pa.Table, survive: np.ndarray, k: int) -> tuple[pa.Table, np.ndarray]:
    """Rows ranked 1..k per query among survivors, in the table's row order (fused score, or match probability)."""
    rows, rank = top_k_rows(table, survive, k)
    return table.take(pa.array(rows)), rank
