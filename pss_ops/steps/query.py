"""Step 5, query: search a query partition with every retriever against every index in its scope, fuse, rank."""

from __future__ import annotations

import logging

from pss_ops import layout, storage
from pss_ops.features.embedded import read_vectors
from pss_ops.features.retriever_inputs import query_matrix
from pss_ops.manifests import BuiltIndex, EmbeddedPartition, IndexPlan, QueriedPartition, RunContext
from pss_ops.search.candidates import search_scope
from pss_ops.search.filters import candidates_per_query
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def query_partition(ctx: RunContext, partition: EmbeddedPartition, index_plan: IndexPlan) -> QueriedPartition:
    """Write, per query item, the union of the retrievers' best eligible candidates (self excluded), best fused first.

    The post-filter's attribute rules are applied during each search (search.eligibility), so a query whose
    nearest items are mostly its own seller's still gets k candidates from other sellers when they exist.
    """
    config = ctx.config
    fetch = candidates_per_query(config)
    with timed(f"query {partition.name}") as timer:
        queries, vectors = read_vectors(partition.uri)
        planned = index_plan.for_scope(partition.scope)
        indexes = [BuiltIndex.read(layout.index_manifest(ctx.run_uri, p.name)) for p in planned]
        # The queries as each exact retriever compares them: TF-IDF with their scope's IDF, or unit vectors.
        exact_queries = {
            r.name: query_matrix(r, partition.retriever_inputs[r.name], planned[0].lexical_idf.get(r.name))
            for r in config.exact_retrievers
            if planned
        }
        found = search_scope(config, queries, vectors, exact_queries, indexes, fetch)
        table = found.table.drop_columns(["_position"])
        with_candidates = len(set(found.table.column("_position").to_numpy().tolist())) if found.table.num_rows else 0
        uri = layout.query_result(ctx.run_uri, partition.name)
        storage.write_parquet(uri, table)
    result = QueriedPartition(
        name=partition.name,
        scope=partition.scope,
        uri=uri,
        queries=len(vectors),
        candidates_per_query=fetch,
        retrievers=tuple(r.name for r in config.retrievers),
        queries_without_candidates=len(vectors) - with_candidates,
        dense_queries_exact=found.dense_queries_exact,
        dense_queries_fallback=found.dense_queries_fallback,
        index_partitions_searched=len(indexes),
        seconds=timer.seconds,
    )
    result.write(layout.query_manifest(ctx.run_uri, partition.name))
    log.info(
        "query %s: %d queries against %d index partitions with %s; dense: %d exact, %d exact fallback; %d without candidates",
        partition.name,
        result.queries,
        len(indexes),
        ", ".join(result.retrievers),
        result.dense_queries_exact,
        result.dense_queries_fallback,
        result.queries_without_candidates,
    )
    return result
