"""Step 1, plan: stream and validate the catalog, write rejects, split accepted rows into partitions."""

from __future__ import annotations

import datetime as dt
import logging

import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.catalog.partition import ScopePartitioner
from pss_ops.catalog.rejects import RejectsWriter
from pss_ops.catalog.source import BATCH_ROWS, CatalogError
from pss_ops.catalog.validate import CatalogValidator, check_reject_fraction, open_catalog
from pss_ops.config import AppConfig
from pss_ops.features.cache.backends import open_cache
from pss_ops.manifests import CatalogPartition, CatalogPlan, RunContext
from pss_ops.orchestration.request import check_run_id
from pss_ops.timing import timed

log = logging.getLogger(__name__)


def make_context(
    config: AppConfig,
    *,
    catalog_uri: str,
    run_uri: str,
    snapshot_date: dt.date,
    run_id: str,
    cache_uri: str,
    categories: tuple[str, ...] | None = None,
    full_refresh: bool = False,
) -> RunContext:
    """The run's identity and resolved config, written once and read by every step."""
    return RunContext(
        application=config.application,
        snapshot_date=snapshot_date,
        run_id=check_run_id(run_id),
        run_uri=storage.absolute(run_uri),
        catalog_uri=storage.absolute(catalog_uri),
        categories=tuple(categories) if categories else None,
        full_refresh=full_refresh,
        cache_uri=cache_uri,
        model_id=config.model_id,
        config=config,
    )


def plan(ctx: RunContext) -> CatalogPlan:
    """Stream, validate and partition the catalog; the manifest is written last.

    Memory is bounded by a batch and a partition, never the catalog: batches are validated one at a
    time, rejects stream to their file, and accepted rows wait on local scratch disk for their partition.
    """
    config = ctx.config
    with timed("plan") as timer:
        ctx.write(layout.context(ctx.run_uri))
        source = open_catalog(ctx.catalog_uri)
        # The cache embed will use: a folder it can't create or write fails here, not after the catalog is split.
        open_cache(ctx.cache_uri).close()
        validator = CatalogValidator(source, config, categories=ctx.categories, batch_rows=BATCH_ROWS)
        rejects_uri = layout.rejects(ctx.run_uri)
        partitions_uri = storage.join(ctx.run_uri, "plan", "partitions")
        with storage.scratch_dir(partitions_uri) as scratch:
            partitioner = ScopePartitioner(
                scratch,
                validator.schema,
                scope_column="category" if config.scope == "category" else None,
                partition_size=config.catalog.partition_size,
            )
            with RejectsWriter(rejects_uri) as rejects:
                for batch in source.batches(batch_rows=BATCH_ROWS):
                    accepted, rejected = validator.validate(batch)
                    rejects.write(rejected)
                    partitioner.add(accepted)
                counts = validator.finish()
            check_reject_fraction(counts, config.catalog.max_reject_fraction, rejects_uri, catalog_uri=ctx.catalog_uri)
            if partitioner.rows == 0:
                # Nothing to embed or search: fail here, with the reasons, rather than at publish with nothing to write.
                raise CatalogError(
                    f"catalog {ctx.catalog_uri}: no row accepted in scope ({counts.rows_read} read, {counts.rows_rejected} rejected, "
                    f"{counts.rows_out_of_scope} out of scope); reasons: {counts.reject_reasons}; see {rejects_uri}"
                )

            partitions: list[CatalogPartition] = []

            def write(scope: str, table: pa.Table) -> None:
                name = f"part-{len(partitions):05d}"
                uri = layout.catalog_partition(ctx.run_uri, name)
                storage.write_parquet(uri, table)
                partitions.append(CatalogPartition(name=name, uri=uri, scope=scope, rows=table.num_rows))

            partitioner.emit(write)
    rows_accepted = partitioner.rows
    result = CatalogPlan(
        partitions=tuple(partitions),
        categories=counts.categories if rows_accepted else tuple(ctx.categories or ()),
        rows_read=counts.rows_read,
        rows_accepted=rows_accepted,
        rows_rejected=counts.rows_rejected,
        rows_out_of_scope=counts.rows_out_of_scope,
        reject_reasons=counts.reject_reasons,
        rejects_uri=rejects_uri,
        seconds=timer.seconds,
    )
    result.write(layout.plan_manifest(ctx.run_uri))
    log.info("plan: %d partitions, %d rows accepted, %d rejected", len(partitions), result.rows_accepted, result.rows_rejected)
    return result
