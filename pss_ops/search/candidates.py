"""A query partition's candidates: every retriever searched over every index of its scope, filtered, united, fused.

Per index partition, each retriever finds its best `fetch` eligible rows (search.dense, search.exact; the
attribute rules applied during the search). Their union is scored by every retriever, so each row carries each
retriever's cosine and which retrievers found it. Across index partitions a row survives while it is within some
retriever's best `fetch` for its query, so memory stays (queries x fetch x retrievers). The rows are ranked by the
fused score: the retrievers' cosines averaged with their configured weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import storage
from pss_ops.config import AppConfig, DenseRetriever, LexicalRetriever
from pss_ops.features.retriever_inputs import read_input
from pss_ops.manifests import BuiltIndex
from pss_ops.search.dense import filtered_search, index_vectors
from pss_ops.search.eligibility import Eligibility
from pss_ops.search.exact import Matrix, exact_search, pair_scores
from pss_ops.search.hnsw import load_index
from pss_ops.search.merge import pack_ids, unpack_ids

PAIR_CHUNK = 16_384


def score_column(retriever: str) -> str:
    """The query output's column of one retriever's cosine."""
    return f"score_{retriever}"


def found_column(retriever: str) -> str:
    """The query output's column saying whether the retriever's own top list held the row."""
    return f"found_{retriever}"


def fused_scores(config: AppConfig, scores: dict[str, np.ndarray]) -> np.ndarray:
    """The weighted mean of the retrievers' cosines: the score rows are ranked and published by."""
    total = sum(r.weight for r in config.retrievers)
    fused = sum(np.float64(r.weight / total) * scores[r.name].astype(np.float64) for r in config.retrievers)
    # Each cosine is within [-1, 1]; rounding in the weighted sum must not carry the mean past it.
    return np.clip(np.asarray(fused, dtype=np.float64), -1.0, 1.0)


@dataclass
class ScopeSearch:
    """The fused candidate table of one query partition and how its dense searches were answered."""

    table: pa.Table
    dense_queries_exact: int
    dense_queries_fallback: int


def _dense_pair_scores(queries: np.ndarray, base: np.ndarray, query_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(query_rows), dtype=np.float32)
    for start in range(0, len(query_rows), PAIR_CHUNK):
        stop = start + PAIR_CHUNK
        out[start:stop] = np.einsum("ij,ij->i", queries[query_rows[start:stop]], base[rows[start:stop]])
    # Inner products of unit float32 vectors can pass 1 by rounding; the published score is a cosine.
    return np.clip(out, -1.0, 1.0)


def _keep_best(rows: dict[str, np.ndarray], names: list[str], fetch: int) -> dict[str, np.ndarray]:
    """Rows still within some retriever's best `fetch` of their query (a retriever's flag is cleared past it)."""
    position = rows["_position"]
    for name in names:
        found = rows[found_column(name)]
        order = np.lexsort((-rows[score_column(name)], ~found, position))
        ranked_position = position[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = ranked_position[1:] != ranked_position[:-1]
        first = np.flatnonzero(starts)
        rank = np.arange(len(order)) - first[np.cumsum(starts) - 1]
        within = np.zeros(len(order), dtype=bool)
        within[order] = rank < fetch
        rows[found_column(name)] = found & within
    alive = np.logical_or.reduce([rows[found_column(n)] for n in names])
    return {key: value[alive] for key, value in rows.items()}


def search_scope(
    config: AppConfig,
    queries: pa.Table,
    vectors: np.ndarray,
    exact_queries: dict[str, Matrix],
    indexes: list[BuiltIndex],
    fetch: int,
) -> ScopeSearch:
    """Each query's union of the retrievers' best `fetch` eligible candidates (self excluded), fused and ranked."""
    names = [r.name for r in config.retrievers]
    dense = next(r for r in config.retrievers if isinstance(r, DenseRetriever))
    rules = config.post_filter
    query_ids = queries.column("item_id")
    id_tables: dict[int, pa.Table] = {}
    kept: dict[str, np.ndarray] | None = None
    exact = fallback = 0
    for built in indexes:
        index = load_index(built.index_uri)
        ids = storage.read_parquet(built.ids_uri)
        id_tables[built.number] = ids
        eligibility = Eligibility(rules, queries, ids)
        # One extra slot: the query item is in its own scope's index, and is dropped below.
        wanted = fetch + 1
        found: dict[str, np.ndarray] = {}
        _, found[dense.name], stats = filtered_search(index, vectors, wanted, built.ef_search, built.hnsw_m, eligibility)
        exact, fallback = exact + stats.exact, fallback + stats.fallback
        exact_rows = {}
        for retriever in config.exact_retrievers:
            exact_rows[retriever.name] = read_input(built.retriever_rows[retriever.name])
            positive_only = isinstance(retriever, LexicalRetriever)  # no shared term, no lexical candidate
            _, found[retriever.name] = exact_search(
                exact_queries[retriever.name], exact_rows[retriever.name], wanted, eligibility, positive_only=positive_only
            )
        # The union: each (query, row) pair once, with the retrievers that found it.
        n = max(int(index.ntotal), 1)
        keys = {name: (np.arange(len(f))[:, None] * n + f)[f >= 0] for name, f in found.items()}
        union = np.unique(np.concatenate(list(keys.values())))
        query_rows, rows = union // n, union % n
        not_self = pc.not_equal(ids.column("item_id").take(pa.array(rows)), query_ids.take(pa.array(query_rows)))
        keep = np.asarray(not_self.to_numpy(zero_copy_only=False), dtype=bool)
        union, query_rows, rows = union[keep], query_rows[keep], rows[keep]
        part: dict[str, np.ndarray] = {"_position": query_rows, "_packed": pack_ids(built.number, rows)}
        part[score_column(dense.name)] = _dense_pair_scores(vectors, index_vectors(index), query_rows, rows)
        for name, matrix in exact_rows.items():
            part[score_column(name)] = pair_scores(exact_queries[name], matrix, query_rows, rows)
        for name in names:
            part[found_column(name)] = np.isin(union, keys[name])
        merged = part if kept is None else {key: np.concatenate([kept[key], part[key]]) for key in part}
        kept = _keep_best(merged, names, fetch)
        del index, exact_rows
    return ScopeSearch(_table(config, queries, kept, id_tables, names), exact, fallback)


def _table(
    config: AppConfig, queries: pa.Table, rows: dict[str, np.ndarray] | None, id_tables: dict[int, pa.Table], names: list[str]
) -> pa.Table:
    """The candidate rows by query, then fused score: q_/c_ attribute columns, each retriever's score and flag."""
    if rows is None:
        rows = {"_position": np.zeros(0, np.int64), "_packed": np.zeros(0, np.int64)}
        rows.update({score_column(n): np.zeros(0, np.float32) for n in names})
        rows.update({found_column(n): np.zeros(0, bool) for n in names})
    fused = fused_scores(config, {n: rows[score_column(n)] for n in names})
    # Ties in the fused score go to the smaller packed id, so reruns rank identically.
    order = np.lexsort((rows["_packed"], -fused, rows["_position"]))
    position = rows["_position"][order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = position[1:] != position[:-1]
    rank = np.arange(len(order)) - np.flatnonzero(starts)[np.cumsum(starts) - 1] + 1
    numbers, local = unpack_ids(rows["_packed"][order])
    ordered = sorted(id_tables)
    scope_ids = (
        pa.concat_tables([id_tables[n] for n in ordered]) if ordered else pa.table({"item_id": pa.array([], pa.string())})
    ).combine_chunks()
    first_row = np.zeros(max(ordered, default=0) + 1, dtype=np.int64)
    first_row[ordered] = np.cumsum([0, *(id_tables[n].num_rows for n in ordered)])[:-1]
    by_query, by_candidate = pa.array(position), pa.array(first_row[numbers] + local if len(order) else np.zeros(0, np.int64))
    columns = {
        "query_item_id": queries.column("item_id").take(by_query),
        "category": queries.column("category").take(by_query),
        "candidate_item_id": scope_ids.column("item_id").take(by_candidate),
        "score": pa.array(fused[order]),
        "search_rank": pa.array(rank.astype(np.int32)),
    }
    for name in names:
        columns[score_column(name)] = pa.array(rows[score_column(name)][order].astype(np.float64))
        columns[found_column(name)] = pa.array(rows[found_column(name)][order])
    for a in config.filter_attributes:
        columns[f"q_{a}"] = queries.column(a).take(by_query)
        columns[f"c_{a}"] = scope_ids.column(a).take(by_candidate)
    columns["_position"] = pa.array(position.astype(np.int64))
    return pa.table(columns)
