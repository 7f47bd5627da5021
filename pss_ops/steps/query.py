"""Step 5, query: search a query partition against every index in its scope, merge the top-K exactly."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import BuiltIndex, EmbeddedPartition, IndexPlan, QueriedPartition, RunContext
from pss_ops.search.candidates import candidate_table
from pss_ops.search.filters import candidates_per_query, filter_mask
from pss_ops.timing import timed

log = logging.getLogger(__name__)

DEEPEN_FACTOR = 4


def query_partition(ctx: RunContext, partition: EmbeddedPartition, index_plan: IndexPlan) -> QueriedPartition:
    """Write, per query item, its best candidates across the scope (self excluded), best first.

    The post-filter runs after the search, so a query whose candidates mostly fail it (say, the
    nearest items are all from its own seller) is searched again, deeper, until k candidates
    pass or post_filter.max_candidates is reached.
    """
    config = ctx.config
    rules = config.post_filter
    first_fetch = candidates_per_query(config)
    with timed(f"query {partition.name}") as timer:
        queries, vectors = read_vectors(partition.uri)
        indexes = [BuiltIndex.read(layout.index_manifest(ctx.run_uri, p.name)) for p in index_plan.for_scope(partition.scope)]
        scope_rows = sum(b.rows for b in indexes)
        cap = max(first_fetch, min(rules.max_candidates, scope_rows - 1))
        pending = np.arange(len(vectors))
        fetch, rounds, deepened = min(first_fetch, max(scope_rows - 1, 1)), 0, 0
        pieces: list[pa.Table] = []
        while len(pending):
            table, full = candidate_table(queries.take(pending), pending, vectors[pending], indexes, fetch, config.filter_attributes)
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
