"""Step 1, plan: validate the catalog, write rejects, split accepted rows into partitions."""

from __future__ import annotations

import datetime as dt
import io
import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.catalog import check_reject_fraction, read_catalog, validate_catalog
from pss_ops.config import VECTOR_COLUMNS, AppConfig
from pss_ops.manifests import CatalogPartition, CatalogPlan, RunContext
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
        run_id=run_id,
        run_uri=storage.absolute(run_uri),
        catalog_uri=storage.absolute(catalog_uri),
        categories=tuple(categories) if categories else None,
        full_refresh=full_refresh,
        cache_uri=cache_uri,
        model_id=config.model_id,
        config=config,
    )


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    arrays = {}
    for column in frame.columns:
        if column in VECTOR_COLUMNS:
            arrays[column] = pa.array([None if v is None else np.asarray(v, np.float32) for v in frame[column]], pa.list_(pa.float32()))
        else:
            arrays[column] = pa.array([None if v is None else str(v) for v in frame[column]], pa.string())
    return pa.table(arrays)


def _scope_of(frame: pd.DataFrame, config: AppConfig) -> pd.Series:
    return frame["category"] if config.scope == "category" else pd.Series("*", index=frame.index)


def plan(ctx: RunContext) -> CatalogPlan:
    """Validate and partition the catalog; the manifest is written last."""
    config = ctx.config
    with timed("plan") as timer:
        storage.write_json(layout.context(ctx.run_uri), ctx.model_dump(mode="json"))
        load = validate_catalog(read_catalog(ctx.catalog_uri), config, categories=ctx.categories)
        rejects_uri = layout.rejects(ctx.run_uri)
        buffer = io.StringIO()
        load.rejects.to_csv(buffer, index=False)
        storage.write_text(rejects_uri, buffer.getvalue())
        check_reject_fraction(load, config.catalog.max_reject_fraction, rejects_uri)

        accepted = load.accepted
        accepted = accepted.assign(_scope=_scope_of(accepted, config))
        partitions: list[CatalogPartition] = []
        size = config.catalog.partition_size
        for scope in sorted(accepted["_scope"].unique()):
            rows = accepted[accepted["_scope"] == scope].drop(columns="_scope")
            for start in range(0, len(rows), size):
                chunk = rows.iloc[start : start + size]
                name = f"part-{len(partitions):05d}"
                uri = layout.catalog_partition(ctx.run_uri, name)
                storage.write_parquet(uri, _to_arrow(chunk))
                partitions.append(CatalogPartition(name=name, uri=uri, scope=str(scope), rows=len(chunk)))
    result = CatalogPlan(
        partitions=tuple(partitions),
        categories=tuple(sorted(accepted["category"].unique())) if len(accepted) else tuple(ctx.categories or ()),
        rows_read=load.rows_read,
        rows_accepted=len(accepted),
        rows_rejected=len(load.rejects),
        rows_out_of_scope=load.rows_out_of_scope,
        reject_reasons=load.reject_reasons,
        rejects_uri=rejects_uri,
        seconds=timer.seconds,
    )
    result.write(layout.plan_manifest(ctx.run_uri))
    log.info("plan: %d partitions, %d rows accepted, %d rejected", len(partitions), result.rows_accepted, result.rows_rejected)
    return result
