"""Step 5, query: search a query partition against every index in its scope, merge the top-K exactly."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import layout, storage
from pss_ops.manifests import BuiltIndex, EmbeddedPartition, IndexPlan, QueriedPartition, RunContext
from pss_ops.search.merge import merge_topk, pack_ids, unpack_ids
from pss_ops.steps.build_index import load_index
from pss_ops.steps.embed import read_vectors
from pss_ops.steps.post_filter import filter_mask
from pss_ops.timing import timed

log = logging.getLogger(__name__)

DEEPEN_FACTOR = 4


def candidates_per_query(ctx: RunContext) -> int:
    """How many candidates the first search round keeps per query: k over-fetched for the post-filter."""
    return ctx.config.k * ctx.config.post_filter.candidate_multiplier


def search_scope(
    ctx: RunContext, vectors: np.ndarray, indexes: list[BuiltIndex], fetch: int
) -> tuple[np.ndarray, np.ndarray, dict[int, pa.Table]]:
    """Search every index of a scope, one loaded at a time, and merge: (scores, packed ids, id tables)."""
    id_tables: dict[int, pa.Table] = {}

    def per_partition():
        for built in indexes:
            index = load_index(built)
            # The plan's efSearch (tuned or the config's), recorded on each built index.
            index.hnsw.efSearch = max(built.ef_search or ctx.config.index.ef_search, fetch)
            scores, rows = index.search(vectors, min(fetch, built.rows))
            id_tables[built.number] = storage.read_parquet(built.ids_uri)
            yield scores, pack_ids(built.number, rows)

    scores, packed = merge_topk(per_partition(), len(vectors), fetch)
    # Inner products of unit float32 vectors can pass 1 by rounding (an identical item scores 1.0000001);
    # the published score is a cosine, so it is kept in a cosine's range. Empty slots are told by id, not score.
    np.clip(scores, -1.0, 1.0, out=scores)
    return scores, packed, id_tables


def _candidate_table(
    ctx: RunContext, queries: pa.Table, positions: np.ndarray, vectors: np.ndarray, indexes: list[BuiltIndex], fetch: int
) -> tuple[pa.Table, np.ndarray]:
    """Each query's best `fetch` candidates (self excluded), and whether its list was full."""
    attributes = ctx.config.filter_attributes
    # One extra slot: the query item is in the index and is dropped below.
    scores, packed, id_tables = search_scope(ctx, vectors, indexes, fetch + 1)
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


def query_partition(ctx: RunContext, partition: EmbeddedPartition, index_plan: IndexPlan) -> QueriedPartition:
    """Write, per query item, its best candidates across the scope (self excluded), best first.

    The post-filter runs after the search, so a query whose candidates mostly fail it (say, the
    nearest items are all from its own seller) is searched again, deeper, until k candidates
    pass or post_filter.max_candidates is reached.
    """
    config = ctx.config
    rules = config.post_filter
    first_fetch = candidates_per_query(ctx)
    with timed(f"query {partition.name}") as timer:
        queries, vectors = read_vectors(partition.uri)
        indexes = [BuiltIndex.read(layout.index_manifest(ctx.run_uri, p.name)) for p in index_plan.for_scope(partition.scope)]
        scope_rows = sum(b.rows for b in indexes)
        cap = max(first_fetch, min(rules.max_candidates, scope_rows - 1))
        pending = np.arange(len(vectors))
        fetch, rounds, deepened = min(first_fetch, max(scope_rows - 1, 1)), 0, 0
        pieces: list[pa.Table] = []
        while len(pending):
            table, full = _candidate_table(ctx, queries.take(pending), pending, vectors[pending], indexes, fetch)
            rounds += 1
            survive, _ = filter_mask(table, rules)
            positions = table.column("_position").to_numpy()
            passing = np.bincount(positions[survive], minlength=len(vectors))[pending]
            again = (passing < config.k) & full & (fetch < cap)
            finished = pa.array(np.isin(positions, pending[~again]))
            pieces.append(table.filter(finished))
            pending = pending[again]
            # Later rounds re-search a subset of the first round's pending queries: count queries, not rounds.
            deepened = max(deepened, len(pending))
            fetch = min(cap, fetch * DEEPEN_FACTOR)
        result_table = pa.concat_tables(pieces)
        if len(pieces) > 1:
            # One round's rows are already by query, then rank; deeper rounds append out of that order.
            result_table = result_table.sort_by([("_position", "ascending"), ("search_rank", "ascending")])
        result_table = result_table.drop_columns(["_position"])
        uri = layout.query_result(ctx.run_uri, partition.name)
        storage.write_parquet(uri, result_table)
    result = QueriedPartition(
        name=partition.name,
        scope=partition.scope,
        uri=uri,
        queries=len(vectors),
        candidates_per_query=first_fetch,
        search_rounds=rounds,
        queries_searched_deeper=deepened,
        index_partitions_searched=len(indexes),
        seconds=timer.seconds,
    )
    result.write(layout.query_manifest(ctx.run_uri, partition.name))
    log.info("query %s: %d queries against %d index partitions, %d searched deeper", partition.name, result.queries, len(indexes), deepened)
    return result
