"""Step 7, publish: the run's rows and duplicate groups as Parquet, and a per-category replace of both in the warehouse.

Duplicate groups are formed here, the one step that sees every partition: a group's items can be listed by
queries of several partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import layout, storage
from pss_ops.manifests import CatalogPlan, FilteredPartition, PublishResult, RunContext
from pss_ops.matching.groups import GROUP_COLUMNS, Comparable, every_pair, linked_groups
from pss_ops.search.filters import passes
from pss_ops.timing import timed
from pss_ops.warehouse.connection import redact_url
from pss_ops.warehouse.publish import PublishStats, publish_similar_items
from pss_ops.warehouse.schema import GROUPS_TABLE_NAME, arrow_schema

log = logging.getLogger(__name__)

BATCH_ROWS = 100_000


def _stream(filtered: list[FilteredPartition]) -> Iterator[pa.Table]:
    """Every filtered partition's rows, BATCH_ROWS at a time: no partition, let alone the run, is held whole."""
    for part in filtered:
        for batch in storage.open_parquet(part.uri).iter_batches(batch_size=BATCH_ROWS):
            yield pa.Table.from_batches([batch])


def _scored_pairs(filtered: list[FilteredPartition], threshold: float) -> pd.DataFrame:
    """The published pairs a duplicate group can be built from: category, id_a, id_b, probability.

    Two passes, so memory holds the pairs near the threshold, never the run: the pairs at or above it name the
    items that can join a group, and only pairs between two such items count towards a group's linkage.
    """
    columns = ["category", "query_item_id", "candidate_item_id", "match_probability"]

    def pairs(keep: object) -> pd.DataFrame:
        frames = []
        for part in filtered:
            table = storage.read_parquet(part.uri, columns=columns)
            frames.append(table.filter(keep(table)).to_pandas())  # type: ignore[operator]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        return frame.rename(columns={"query_item_id": "id_a", "candidate_item_id": "id_b", "match_probability": "probability"})

    strong = pairs(lambda t: pc.fill_null(pc.greater_equal(t.column("match_probability"), threshold), False))
    linkable = pa.array(pd.unique(np.concatenate([strong["id_a"].to_numpy(), strong["id_b"].to_numpy()])), pa.string())
    return pairs(
        lambda t: pc.and_(
            pc.is_valid(t.column("match_probability")),
            pc.and_(pc.is_in(t.column("query_item_id"), value_set=linkable), pc.is_in(t.column("candidate_item_id"), value_set=linkable)),
        )
    )


def _comparable(ctx: RunContext, catalog_plan: CatalogPlan, items: pa.Array) -> Comparable:
    """Counts the cross pairs of two item sets that the post-filter's attribute rules let a query list."""
    rules = ctx.config.post_filter
    attributes = ctx.config.filter_attributes
    if not attributes:
        return every_pair
    frames = []
    for partition in catalog_plan.partitions:
        rows = storage.read_parquet(partition.uri, columns=["item_id", *attributes])
        frames.append(rows.filter(pc.is_in(rows.column("item_id"), value_set=items)).to_pandas())
    values = pd.concat(frames).set_index("item_id") if frames else pd.DataFrame(columns=list(attributes))

    def comparable(a: Sequence[str], b: Sequence[str]) -> int:
        left, right = values.loc[list(a)], values.loc[list(b)]
        listable, _ = passes(
            rules,
            {x: left[x].to_numpy(dtype=object)[:, None] for x in attributes},
            {x: right[x].to_numpy(dtype=object)[None, :] for x in attributes},
            np.ones((len(a), len(b))),
        )
        return int(listable.sum())

    return comparable


def duplicate_groups(ctx: RunContext, catalog_plan: CatalogPlan, filtered: list[FilteredPartition]) -> pa.Table:
    """Every category's duplicate groups in the warehouse shape (no rows without a matcher)."""
    shape = arrow_schema(GROUPS_TABLE_NAME)
    matcher = ctx.config.matcher
    if matcher is None:
        return shape.empty_table()
    pairs = _scored_pairs(filtered, matcher.match_threshold)
    comparable = _comparable(ctx, catalog_plan, pa.array(pd.unique(pd.concat([pairs["id_a"], pairs["id_b"]])), pa.string()))
    frames = []
    for category, in_category in pairs.groupby("category", sort=True):
        groups = linked_groups(in_category, matcher.match_threshold, comparable=comparable)
        groups.insert(0, "category", category)
        frames.append(groups)
    found = ["category", *GROUP_COLUMNS]
    groups = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=found)
    n = len(groups)
    columns = {
        "application": pa.array([ctx.application] * n, pa.string()),
        "snapshot_date": pa.array([ctx.snapshot_date] * n, pa.date32()),
        "run_id": pa.array([ctx.run_id] * n, pa.string()),
        **{c: pa.array(groups[c].tolist()) for c in found},
    }
    return pa.table({name: columns[name] for name in shape.names}).cast(shape)


def publish(
    ctx: RunContext,
    catalog_plan: CatalogPlan,
    warehouse_url: str,
    *,
    before_commit: Callable[[PublishResult], None] | None = None,
) -> PublishResult:
    """Publish every filtered partition and the duplicate groups; all partitions must exist, or nothing is published.

    The run's files are written first and the warehouse last. before_commit gets the result once the warehouse holds
    every row, before its commit: anything it writes that fails leaves the warehouse as it was.
    """
    with timed("publish") as timer:
        # Read every manifest first: a missing partition fails here, before the warehouse is touched.
        filtered = [FilteredPartition.read(layout.filter_manifest(ctx.run_uri, p.name)) for p in catalog_plan.partitions]
        parquet_uri = layout.similar_items(ctx.run_uri)
        rows = storage.write_parquet_batches(parquet_uri, arrow_schema(), _stream(filtered))
        groups = duplicate_groups(ctx, catalog_plan, filtered)
        groups_uri = layout.duplicate_groups(ctx.run_uri)
        storage.write_parquet(groups_uri, groups)

        def result_of(stats: PublishStats) -> PublishResult:
            return PublishResult(
                parquet_uri=parquet_uri,
                warehouse=redact_url(warehouse_url),
                table=stats.table,
                categories=tuple(stats.categories),
                rows=rows,
                rows_replaced=stats.rows_deleted,
                seconds=timer.seconds,  # so far, when before_commit asks
                groups_uri=groups_uri,
                duplicate_groups=len(set(groups.column("group_id").to_pylist())),
                items_in_groups=groups.num_rows,
            )

        stats = publish_similar_items(
            warehouse_url,
            application=ctx.application,
            snapshot_date=ctx.snapshot_date,
            categories=catalog_plan.categories,
            batches=_stream(filtered),
            expected_rows=sum(f.rows for f in filtered),
            group_batches=[groups],
            before_commit=None if before_commit is None else lambda stats: before_commit(result_of(stats)),
        )
    result = result_of(stats).model_copy(update={"seconds": timer.seconds})
    result.write(layout.publish_manifest(ctx.run_uri))
    log.info(
        "publish: %d rows to %s (%s), replaced %d; %d duplicate groups of %d items",
        rows,
        result.warehouse,
        result.table,
        stats.rows_deleted,
        result.duplicate_groups,
        result.items_in_groups,
    )
    return result
