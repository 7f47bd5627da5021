"""Step 6, post_filter: keep candidates that pass the attribute rules and score floor, rank the top k."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import layout, storage
from pss_ops.config import AppConfig
from pss_ops.manifests import FilteredPartition, QueriedPartition, RunContext
from pss_ops.matching.registry import load_matcher_cached
from pss_ops.matching.scoring import match_probabilities
from pss_ops.search.candidates import found_column, score_column
from pss_ops.search.filters import filter_mask, top_k_rows
from pss_ops.timing import timed
from pss_ops.warehouse.schema import arrow_schema

log = logging.getLogger(__name__)

# Digits kept of each retriever's cosine in retriever_scores: float32 cosines carry about seven.
SCORE_DECIMALS = 6


def found_by(table: pa.Table, config: AppConfig) -> pa.Array:
    """The retrievers whose own top list held each row, comma-separated in config order (Coupang's overlap)."""
    names = [r.name for r in config.retrievers]
    flags = [pc.if_else(table.column(found_column(n)), pa.scalar(n), pa.scalar(None, pa.string())) for n in names]
    return pc.binary_join_element_wise(*flags, ",", null_handling="skip")


def retriever_scores(table: pa.Table, config: AppConfig) -> pa.Array:
    """Each retriever's cosine for each row as a JSON object, {"dense": 0.91, "lexical": 0.62}, in config order."""
    parts: list[pa.Array | pa.Scalar] = []
    for i, retriever in enumerate(config.retrievers):
        rounded = pc.round(table.column(score_column(retriever.name)), SCORE_DECIMALS)
        parts += [pa.scalar(("{" if i == 0 else ", ") + json.dumps(retriever.name) + ": "), pc.cast(rounded, pa.string())]
    parts.append(pa.scalar("}"))
    return pc.binary_join_element_wise(*parts, "")


def _by_probability(table: pa.Table, probability: np.ndarray) -> np.ndarray:
    """Row order with each query's rows (contiguous in the query output) by match probability, then fused score."""
    queries = table.column("query_item_id")
    n = table.num_rows
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = pc.not_equal(queries.slice(1), queries.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.lexsort((-table.column("score").to_numpy(), -probability, np.cumsum(starts)))


def apply_matcher(
    ctx: RunContext, queried: QueriedPartition, table: pa.Table, rows: np.ndarray, rank: np.ndarray, removed: dict[str, int]
) -> tuple[pa.Table, np.ndarray]:
    """The published rows (table's rows at `rows`, ranked `rank` by fused score) with match_probability.

    With a matcher: each query's k rows re-ranked by probability, min_match_probability applied. The matcher
    scores the rows the fused ranking publishes, the pairs its labels are drawn from (label queues and label files
    come from published pairs); their features are read off the whole candidate table.
    """
    config = ctx.config
    top = table.take(pa.array(rows))
    if config.matcher is None:
        return top.append_column("match_probability", pa.nulls(top.num_rows, pa.float64())), rank
    matcher, spec = load_matcher_cached(config.matcher.registry_uri, config.matcher.model_id)
    retrievers = tuple(r.name for r in config.retrievers)
    if spec.retrievers != retrievers or spec.compound_model_id != config.compound_model_id:
        raise ValueError(
            f"matcher {config.matcher.model_id} was trained with retrievers {', '.join(spec.retrievers)} over features "
            f"{spec.compound_model_id}; this config has {', '.join(retrievers)} over {config.compound_model_id}: "
            "its scores mean something else now, retrain it with pss train-matcher"
        )
    probability = match_probabilities(matcher, config, ctx.run_uri, queried.scope, table, rows)
    floor = config.post_filter.min_match_probability
    if floor is not None:
        kept = probability >= floor
        removed["min_match_probability"] = int((~kept).sum())
        top, probability = top.filter(pa.array(kept)), probability[kept]
    order = _by_probability(top, probability)
    top = top.take(pa.array(order)).append_column("match_probability", pa.array(probability[order]))
    _, rank = top_k_rows(top, np.ones(top.num_rows, dtype=bool), config.k)
    return top, rank


def _at_least(values: pa.ChunkedArray, threshold: float) -> int:
    return int(pc.sum(pc.greater_equal(values, threshold)).as_py() or 0)


def post_filter_partition(ctx: RunContext, queried: QueriedPartition) -> FilteredPartition:
    """Apply the post-filter (and the matcher, when set) to one queried partition and write rows in the warehouse shape."""
    config = ctx.config
    with timed(f"post_filter {queried.name}") as timer:
        table = storage.read_parquet(queried.uri)
        survive, removed = filter_mask(table, config.post_filter)
        rows, rank = top_k_rows(table, survive, config.k)
        with timed(f"match {queried.name}") as matching:
            top, rank = apply_matcher(ctx, queried, table, rows, rank, removed)
        n = top.num_rows
        # The warehouse table's shape decides the column order and types (warehouse.schema).
        shape = arrow_schema()
        output = (
            pa.table(
                {
                    "application": pa.array([ctx.application] * n),
                    "snapshot_date": pa.array([ctx.snapshot_date] * n),
                    "category": top.column("category"),
                    "query_item_id": top.column("query_item_id"),
                    "candidate_item_id": top.column("candidate_item_id"),
                    "rank": pa.array(rank),
                    "score": top.column("score"),
                    "run_id": pa.array([ctx.run_id] * n),
                    "found_by": found_by(top, ctx.config),
                    "retriever_scores": retriever_scores(top, ctx.config),
                    "match_probability": top.column("match_probability"),
                }
            )
            .select(shape.names)
            .cast(shape)
        )
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
        rows_matched=None if config.matcher is None else _at_least(output.column("match_probability"), config.matcher.match_threshold),
        matching_seconds=None if config.matcher is None else matching.seconds,
    )
    result.write(layout.filter_manifest(ctx.run_uri, queried.name))
    log.info("post_filter %s: %d rows, %d queries short of k=%d, removed %s", queried.name, n, queries_short, config.k, removed)
    return result
