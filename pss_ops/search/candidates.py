"""A query partition's candidates: every index of its scope searched, merged exactly, self excluded, ranked."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import storage
from pss_ops.manifests import BuiltIndex
from pss_ops.search.hnsw import load_index, search_hnsw
from pss_ops.search.merge import merge_topk, pack_ids, unpack_ids


def search_scope(vectors: np.ndarray, indexes: list[BuiltIndex], fetch: int) -> tuple[np.ndarray, np.ndarray, dict[int, pa.Table]]:
    """Search every index of a scope, one loaded at a time, and merge: (scores, packed ids, id tables)."""
    id_tables: dict[int, pa.Table] = {}

    def per_partition() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for built in indexes:
            # Each index is searched with the efSearch recorded when it was built (the plan's, or calibrated).
            scores, rows = search_hnsw(load_index(built.index_uri), vectors, min(fetch, built.rows), max(built.ef_search, fetch))
            id_tables[built.number] = storage.read_parquet(built.ids_uri)
            yield scores, pack_ids(built.number, rows)

    scores, packed = merge_topk(per_partition(), len(vectors), fetch)
    # Inner products of unit float32 vectors can pass 1 by rounding (an identical item scores 1.0000001);
    # the published score is a cosine, so it is kept in a cosine's range. Empty slots are told by id, not score.
    np.clip(scores, -1.0, 1.0, out=scores)
    return scores, packed, id_tables


def candidate_table(
    queries: pa.Table,
    positions: np.ndarray,
    vectors: np.ndarray,
    indexes: list[BuiltIndex],
    fetch: int,
    attributes: tuple[str, ...],
) -> tuple[pa.Table, np.ndarray]:
    """Each query's best `fetch` candidates (self excluded) with q_/c_ attribute columns, and whether its list was full."""
    # One extra slot: the query item is in the index and is dropped below.
    scores, packed, id_tables = search_scope(vectors, indexes, fetch + 1)
    numbers, rows = unpack_ids(packed)
    valid = packed >= 0
    # The scope's id tables end to end, so a candidate is one row number into them (Arrow take, no Python objects).
    order = sorted(id_tables)
    scope_ids = (
        pa.concat_tables([id_tables[n] for n in order]) if order else pa.table({"item_id": pa.array([], pa.string())})
    ).combine_chunks()
    first_row = np.zeros(max(order, default=0) + 1, dtype=np.int64)
    first_row[order] = np.cumsum([0, *(id_tables[n].num_rows for n in order)])[:-1]
    row = np.where(valid, first_row[np.where(valid, numbers, 0)] + rows, 0)

    query_item = queries.column("item_id")
    q_all, slot_all = np.nonzero(valid)
    candidate = scope_ids.column("item_id").take(pa.array(row[q_all, slot_all]))
    not_self = pc.not_equal(candidate, query_item.take(pa.array(q_all))).to_numpy(zero_copy_only=False)
    keep = np.zeros_like(valid)
    keep[q_all[not_self], slot_all[not_self]] = True
    keep &= np.cumsum(keep, axis=1) <= fetch
    full = keep.sum(axis=1) == fetch
    q_index, slot = np.nonzero(keep)
    rank = (np.cumsum(keep, axis=1) - 1)[q_index, slot] + 1
    by_query, by_candidate = pa.array(q_index), pa.array(row[q_index, slot])
    columns = {
        "query_item_id": query_item.take(by_query),
        "category": queries.column("category").take(by_query),
        "candidate_item_id": scope_ids.column("item_id").take(by_candidate),
        "score": pa.array(scores[q_index, slot].astype(np.float64)),
        "search_rank": pa.array(rank.astype(np.int32)),
    }
    for a in attributes:
        columns[f"q_{a}"] = queries.column(a).take(by_query)
        columns[f"c_{a}"] = scope_ids.column(a).take(by_candidate)
    columns["_position"] = pa.array(positions[q_index].astype(np.int64))
    return pa.table(columns), full
