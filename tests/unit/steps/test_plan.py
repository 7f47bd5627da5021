"""The plan step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from pss_ops import layout, storage
from pss_ops.manifests import (
    CatalogPlan,
    RunContext,
)
from pss_ops.steps.plan import plan
from tests.conftest import Subset
from tests.unit.conftest import Stepped


def test_plan_partitions_cover_accepted_rows_within_one_scope(stepped: Stepped, ag_subset: Subset) -> None:
    catalog_plan = stepped.catalog_plan
    assert catalog_plan.rows_read == len(ag_subset.frame)
    assert catalog_plan.rows_rejected == 0
    assert sum(p.rows for p in catalog_plan.partitions) == catalog_plan.rows_accepted == len(ag_subset.frame)
    assert set(catalog_plan.categories) == set(ag_subset.frame["category"])
    # Several partitions per scope, each holding one scope's rows only.
    assert all(n >= 2 for n in Counter(p.scope for p in catalog_plan.partitions).values())
    seen: list[str] = []
    for part in catalog_plan.partitions:
        frame = storage.read_parquet(part.uri).to_pandas()
        assert len(frame) == part.rows <= stepped.ctx.config.catalog.partition_size
        assert set(frame["category"]) == {part.scope}
        seen.extend(frame["item_id"])
    assert sorted(seen) == sorted(ag_subset.frame["item_id"])
    expected_scope = dict(zip(ag_subset.frame["item_id"], ag_subset.frame["category"]))
    for part in catalog_plan.partitions:
        ids = storage.read_parquet(part.uri, columns=["item_id"]).column("item_id").to_pylist()
        assert {expected_scope[i] for i in ids} == {part.scope}


def test_plan_manifest_is_written_last_and_readable(stepped: Stepped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CatalogPlan.read(layout.plan_manifest(stepped.ctx.run_uri)) == stepped.catalog_plan
    assert RunContext.read(layout.context(stepped.ctx.run_uri)) == stepped.ctx

    ctx = stepped.ctx.model_copy(update={"run_uri": str(tmp_path / "run")})
    real_write = storage.write_parquet
    calls = []

    def failing_second_partition(uri: str, table: pa.Table) -> None:
        calls.append(uri)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(uri, table)

    monkeypatch.setattr(storage, "write_parquet", failing_second_partition)
    with pytest.raises(OSError, match="disk full"):
        plan(ctx)
    assert len(calls) == 2
    assert not storage.exists(layout.plan_manifest(ctx.run_uri))
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        CatalogPlan.read(layout.plan_manifest(ctx.run_uri))

    monkeypatch.setattr(storage, "write_parquet", real_write)
    again = plan(ctx)
    assert CatalogPlan.read(layout.plan_manifest(ctx.run_uri)) == again
    assert again.model_dump(exclude={"partitions", "rejects_uri", "seconds"}) == stepped.catalog_plan.model_dump(
        exclude={"partitions", "rejects_uri", "seconds"}
    )
    assert [(p.name, p.scope, p.rows) for p in again.partitions] == [(p.name, p.scope, p.rows) for p in stepped.catalog_plan.partitions]
