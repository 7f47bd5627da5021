"""A run made by calling every step function in order on the real catalog subset, shared by the step and search tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pss_ops import storage
from pss_ops.config import AppConfig
from pss_ops.features.cache.backends import open_cache
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import (
    BuiltIndex,
    CatalogPlan,
    EmbeddedPartition,
    FilteredPartition,
    IndexPlan,
    PublishResult,
    QueriedPartition,
    RunContext,
)
from pss_ops.steps.build_index import build_index
from pss_ops.steps.embed import embed_partition
from pss_ops.steps.plan import make_context, plan
from pss_ops.steps.plan_index import plan_index
from pss_ops.steps.post_filter import post_filter_partition
from pss_ops.steps.publish import publish
from pss_ops.steps.query import query_partition
from pss_ops.steps.report import report
from tests.conftest import SNAPSHOT, Subset

# Brute force and HNSW round the same cosine differently; scores this close are the same score.
TIE = 1e-5


@dataclass(frozen=True)
class Stepped:
    """A run made by calling every step function in order."""

    ctx: RunContext
    catalog_plan: CatalogPlan
    embedded: list[EmbeddedPartition]
    index_plan: IndexPlan
    built: list[BuiltIndex]
    queried: list[QueriedPartition]
    filtered: list[FilteredPartition]
    published: PublishResult
    summary: dict[str, Any]
    warehouse: Path


@pytest.fixture(scope="session")
def stepped(tmp_path_factory: pytest.TempPathFactory, ag_subset: Subset, warm_config: AppConfig) -> Stepped:
    """One run, made once for every test module that inspects a step's output."""
    # ef_search above every index partition's size makes each HNSW search exhaustive, so any
    # difference from brute force is the cross-partition merge's fault, not HNSW's.
    config = warm_config.model_copy(update={"index": warm_config.index.model_copy(update={"ef_search": 512})})
    root = tmp_path_factory.mktemp("stepped")
    ctx = make_context(
        config,
        catalog_uri=str(ag_subset.catalog),
        run_uri=str(root / "run"),
        snapshot_date=SNAPSHOT,
        run_id="run-unit-steps",
        cache_uri=str(config.cache.uri),
    )
    catalog_plan = plan(ctx)
    cache = open_cache(ctx.cache_uri)
    try:
        embedded = [embed_partition(ctx, p, cache) for p in catalog_plan.partitions]
    finally:
        cache.close()
    index_plan = plan_index(ctx, catalog_plan)
    built = [build_index(ctx, p) for p in index_plan.partitions]
    queried = [query_partition(ctx, e, index_plan) for e in embedded]
    filtered = [post_filter_partition(ctx, q) for q in queried]
    warehouse = root / "warehouse.sqlite"
    published = publish(ctx, catalog_plan, f"sqlite:///{warehouse}")
    summary = report(ctx)
    return Stepped(ctx, catalog_plan, embedded, index_plan, built, queried, filtered, published, summary, warehouse)


def scope_vectors(stepped: Stepped, scope: str) -> tuple[list[str], np.ndarray]:
    """Every embedded item id and vector of one scope, in partition order."""
    ids: list[str] = []
    blocks = []
    for part in stepped.embedded:
        if part.scope == scope:
            table, vectors = read_vectors(part.uri)
            ids.extend(table.column("item_id").to_pylist())
            blocks.append(vectors)
    return ids, np.vstack(blocks)


def queried_table(stepped: Stepped) -> pa.Table:
    """Every query partition's candidate rows, before the post-filter."""
    return pa.concat_tables(storage.read_parquet(q.uri) for q in stepped.queried)
