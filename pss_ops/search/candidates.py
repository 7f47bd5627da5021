"""A query partition's candidates: every retriever searched over every index of its scope, filtered, united, fused.

Per index partition, each retriever finds its best `fetch` eligible rows (search.dense, search.exact; the
attribute rules applied during the search). Their union is scored by every retriever, so each row carries each
retriever's cosine and which retrievers found it. Across index partitions a row survives while it is within some
retriever's best `fetch` for its query, so memory stays (queries x fetch x retrievers). The rows are ranked by the
fused score: the retrievers' cosines averaged with their configured weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import storage
from pss_ops.config import AppConfig, DenseRetriever, LexicalRetriever, PrecomputedVectorFeature, TextEmbeddingFeature, feature_name
from pss_ops.features.retriever_inputs import read_input
from pss_ops.manifests import BuiltIndex
from pss_ops.search.dense import filtered_search
from pss_ops.search.eligibility import Eligibility
from pss_ops.search.exact import Matrix, exact_search, pair_scores
from pss_ops.search.indexes import load_index, read_row_vectors, stored_vectors
from pss_ops.search.merge import pack_ids, unpack_ids


def score_column(retriever: str) -> str:
    """The query output's column of one retriever's cosine."""
    return f"score_{retriever}"


def found_column(retriever: str) -> str:
    """The query output's column saying whether the retriever's own top list held the row."""
    return f"found_{retriever}"


def cosine_column(feature: str) -> str:
    """The query output's column of one compound-embedding feature's own cosine (a matcher input)."""
    return f"cos_{feature}"


def feature_blocks(config: AppConfig) -> dict[str, slice]:
    """Where each dense feature's block lies in the compound vector, for the features whose own cosine is kept.

    Dense blocks only (text embeddings, precomputed vectors): a hashed lexical block is thousands of mostly-zero
    dimensions, and its evidence reaches the matcher as title overlap instead. None when the searched vectors are
    not the compound (a learned model maps it) or hold one block (whose cosine is the dense score itself).
    """
    if config.embedding_model is not None or len(config.features) < 2:
        return {}
    blocks, start = {}, 0
    for feature in config.features:
        if isinstance(feature, TextEmbeddingFeature | PrecomputedVectorFeature):
            blocks[feature_name(feature)] = slice(start, start + feature.dim)
        start += feature.dim
    return blocks


# Pairs per gather when reading one feature block's cosines: bounds the copy to a few MB.
_BLOCK_PAIRS = 16_384


def _block_cosines(queries: np.ndarray, base: np.ndarray, query_rows: np.ndarray, rows: np.ndarray, block: slice) -> np.ndarray:
    """Cosine of one block of the (query, row) pairs' vectors; NaN where either block is zero (the input was empty)."""
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _BLOCK_PAIRS):
        stop = start + _BLOCK_PAIRS
        a, b = queries[query_rows[start:stop], block], base[rows[start:stop], block]
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.clip(np.einsum("ij,ij->i", a, b) / norms, -1.0, 1.0)
    return out


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
    """Inner products of (query, row) pairs sorted by query, computed in place by faiss (no gathered copies of rows)."""
    if not len(query_rows):
        return np.zeros(0, np.float32)
    counts = np.bincount(query_rows, minlength=len(queries))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(query_rows)) - starts[query_rows]
    ids = np.full((len(queries), int(counts.max())), -1, dtype=np.int64)
    ids[query_rows, slot] = rows
    out = np.empty(ids.shape, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]
        faiss.swig_ptr(out),
        faiss.swig_ptr(queries),
        faiss.swig_ptr(base),
        faiss.swig_ptr(ids),
        queries.shape[1],
        ids.shape[0],
        ids.shape[1],
    )
    # Inner products of unit float32 vectors can pass 1 by rounding; the published score is a cosine.
    return np.clip(out[query_rows, slot], -1.0, 1.0)


def _own_rows(query_ids: pa.ChunkedArray, ids: pa.Table) -> np.ndarray:
    """Each query item's row in an index partition's id table, -1 where it is not there."""
    rows = pc.index_in(query_ids, value_set=ids.column("item_id").combine_chunks())
    return np.asarray(pc.fill_null(rows, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


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


def _row_vectors(index: faiss.Index, built: BuiltIndex) -> Callable[[], np.ndarray]:
    """The index's vectors in row order, read when first asked for: in the index (flat, hnsw) or beside it (ivf)."""
    held: list[np.ndarray] = []

    def vectors() -> np.ndarray:
        if not held:
            stored = stored_vectors(index)
            if stored is None:
                if built.vectors_uri is None:
                    raise ValueError(f"index partition {built.name} keeps no row vectors: rebuild it with build_index")
                stored = read_row_vectors(built.vectors_uri)
            held.append(stored)
        return held[0]

    return vectors


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
    blocks = feature_blocks(config)
    rules = config.post_filter
    id_tables: dict[int, pa.Table] = {}
    kept: dict[str, np.ndarray] | None = None
    exact = fallback = 0
    for built in indexes:
        index = load_index(built.index_uri)
        base = _row_vectors(index, built)
        ids = storage.read_parquet(built.ids_uri)
        id_tables[built.number] = ids
        eligibility = Eligibility(rules, queries, ids)
        # One extra slot: the query item is in its own scope's index, and is dropped below.
        wanted = fetch + 1
        scores: dict[str, np.ndarray] = {}
        found: dict[str, np.ndarray] = {}
        also: dict[str, np.ndarray] = {}
        scores[dense.name], found[dense.name], stats = filtered_search(index, vectors, wanted, built.index, base, eligibility)
        exact, fallback = exact + stats.exact, fallback + stats.fallback
        exact_rows = {}
        for retriever in config.exact_retrievers:
            exact_rows[retriever.name] = read_input(built.retriever_rows[retriever.name])
            scores[retriever.name], found[retriever.name], also[retriever.name] = exact_search(
                exact_queries[retriever.name],
                exact_rows[retriever.name],
                wanted,
                eligibility,
                # No shared term, no lexical candidate.
                positive_only=isinstance(retriever, LexicalRetriever),
                also=found[dense.name],
            )
        n = max(int(index.ntotal), 1)
        own = _own_rows(queries.column("item_id"), ids)
        dense_keys = (np.arange(len(vectors))[:, None] * n + found[dense.name])[found[dense.name] >= 0]
        # Each retriever's list without the query itself, cut to fetch (lists are best first).
        kept_keys, kept_scores = {}, {}
        for name in names:
            valid = (found[name] >= 0) & (found[name] != own[:, None])
            valid &= np.cumsum(valid, axis=1) <= fetch
            kept_keys[name] = (np.arange(len(vectors))[:, None] * n + found[name])[valid]
            kept_scores[name] = scores[name][valid]
        # The union: each (query, row) pair once, with the retrievers that found it and every retriever's cosine.
        every = np.sort(np.concatenate(list(kept_keys.values())))
        union = every[np.concatenate([[True], every[1:] != every[:-1]])] if len(every) else every
        query_rows, rows = union // n, union % n
        part: dict[str, np.ndarray] = {"_position": query_rows, "_packed": pack_ids(built.number, rows)}
        for name in names:
            at = np.searchsorted(union, kept_keys[name])
            flags = np.zeros(len(union), dtype=bool)
            flags[at] = True
            cosines = np.full(len(union), np.nan, dtype=np.float32)
            cosines[at] = kept_scores[name]
            if name in also:
                # Read off the products that found this retriever's own list: the dense retriever's candidates.
                where = np.minimum(np.searchsorted(union, dense_keys), max(len(union) - 1, 0))
                listed = (union[where] == dense_keys) if len(union) else np.zeros(0, bool)
                extra = also[name][found[dense.name] >= 0][listed]
                cosines[where[listed]] = np.where(np.isnan(cosines[where[listed]]), extra, cosines[where[listed]])
            missing = np.flatnonzero(np.isnan(cosines))
            if len(missing):
                if name == dense.name:
                    cosines[missing] = _dense_pair_scores(vectors, base(), query_rows[missing], rows[missing])
                else:
                    cosines[missing] = pair_scores(exact_queries[name], exact_rows[name], query_rows[missing], rows[missing])
            part[score_column(name)] = cosines
            part[found_column(name)] = flags
        for feature, block in blocks.items():
            part[cosine_column(feature)] = _block_cosines(vectors, base(), query_rows, rows, block)
        # Across index partitions a row survives while some retriever still counts it among its best fetch.
        kept = part if kept is None else _keep_best({key: np.concatenate([kept[key], part[key]]) for key in part}, names, fetch)
        del index, base, exact_rows
    return ScopeSearch(_table(config, queries, kept, id_tables, names, list(blocks)), exact, fallback)


def _ranks(position: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal positions (rows already grouped by query)."""
    starts = np.ones(len(position), dtype=bool)
    starts[1:] = position[1:] != position[:-1]
    return np.arange(len(position)) - np.flatnonzero(starts)[np.cumsum(starts) - 1] + 1


def _by_query_then_score(position: np.ndarray, score: np.ndarray, by_packed: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    """Row order by query, then rows flagged `last` after the others, then score descending, ties by packed id.

    What np.lexsort((packed, -score, last, position)) gives, in two stable sorts instead of four (lexsort was a
    quarter of a query step at 1M rows): `by_packed` is the rows' stable order by packed id, and the other keys
    fold into one float (a cosine lies within [-1, 1], so 1 - score within [0, 2]).
    """
    key = position.astype(np.float64) * 8.0 + (1.0 - score.astype(np.float64))
    if last is not None:
        key += 4.0 * last
    return by_packed[np.argsort(key[by_packed], kind="stable")]


def _table(
    config: AppConfig,
    queries: pa.Table,
    rows: dict[str, np.ndarray] | None,
    id_tables: dict[int, pa.Table],
    names: list[str],
    features: list[str],
) -> pa.Table:
    """The kept candidate rows by query, then fused score: q_/c_ attribute columns, each retriever's score and flag,
    each dense feature's own cosine."""
    if rows is None:
        rows = {"_position": np.zeros(0, np.int64), "_packed": np.zeros(0, np.int64)}
        rows.update({score_column(n): np.zeros(0, np.float32) for n in names})
        rows.update({found_column(n): np.zeros(0, bool) for n in names})
        rows.update({cosine_column(f): np.zeros(0, np.float32) for f in features})
    fused = fused_scores(config, {n: rows[score_column(n)] for n in names})
    # Ties in the fused score go to the smaller packed id, so reruns rank identically.
    by_packed = np.argsort(rows["_packed"], kind="stable")
    order = _by_query_then_score(rows["_position"], fused, by_packed)
    rank = _ranks(rows["_position"][order])
    # Written: the fused top k (all the post-filter can publish: the rules were applied in the search, and a
    # min_score floor on the fused score cuts a prefix) and each retriever's own top k (the summary's recall).
    keep = np.zeros(len(order), dtype=bool)
    keep[order] = rank <= config.k
    for name in names:
        found = rows[found_column(name)]
        own = _by_query_then_score(rows["_position"], rows[score_column(name)], by_packed, last=~found)
        keep[own] |= found[own] & (_ranks(rows["_position"][own]) <= config.k)
    order, rank = order[keep[order]], rank[keep[order]]
    position = rows["_position"][order]
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
    for feature in features:
        columns[cosine_column(feature)] = pa.array(rows[cosine_column(feature)][order])
    for a in config.filter_attributes:
        columns[f"q_{a}"] = queries.column(a).take(by_query)
        columns[f"c_{a}"] = scope_ids.column(a).take(by_candidate)
    columns["_position"] = pa.array(position.astype(np.int64))
    return pa.table(columns)
