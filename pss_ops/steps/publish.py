"""Step 7, publish: one Parquet of the run's rows, and a per-category replace in the warehouse, both streamed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.manifests import CatalogPlan, FilteredPartition, PublishResult, RunContext
from pss_ops.timing import timed
from pss_ops.warehouse.publish import publish_similar_items, redact_url
from pss_ops.warehouse.schema import arrow_schema

log = logging.getLogger(__name__)

BATCH_ROWS = 100_000


def _stream(filtered: list[FilteredPartition]) -> Iterator[pa.Table]:
    """Every filtered partition's rows, BATCH_ROWS at a time: no partition, let alone the run, is held whole."""
    for part in filtered:
        for batch in storage.open_parquet(part.uri).iter_batches(batch_size=BATCH_ROWS):
            yield pa.Table.from_batches([batch])


def publish(ctx: RunContext, catalog_plan: CatalogPlan, warehouse_url: str) -> PublishResult:
    """Publish every filtered partition; all must exist, or nothing is published."""
    with timed("publish") as timer:
        # Read every manifest first: a missing partition fails here, before the warehouse is touched.
        filtered = [FilteredPartition.read(layout.filter_manifest(ctx.run_uri, p.name)) for p in catalog_plan.partitions]
        parquet_uri = layout.similar_items(ctx.run_uri)
        rows = storage.write_parquet_batches(parquet_uri, arrow_schema(), _stream(filtered))
        stats = publish_similar_items(
            warehouse_url,
            application=ctx.application,
            snapshot_date=ctx.snapshot_date,
            categories=catalog_plan.categories,
            batches=_stream(filtered),
            expected_rows=sum(f.rows for f in filtered),
        )
    result = PublishResult(
        parquet_uri=parquet_uri,
        warehouse=redact_url(warehouse_url),
        table=stats.table,
        categories=tuple(stats.categories),
        rows=rows,
        rows_replaced=stats.rows_deleted,
        seconds=timer.seconds,
    )
    result.write(layout.publish_manifest(ctx.run_uri))
    log.info("publish: %d rows to %s (%s), replaced %d", rows, result.warehouse, result.table, stats.rows_deleted)
    return result
