"""The publish step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

import sqlite3

import pyarrow as pa

from pss_ops import layout, storage
from pss_ops.manifests import (
    PublishResult,
)
from tests.unit.conftest import Stepped


def test_publish_writes_parquet_and_warehouse(stepped: Stepped) -> None:
    published = stepped.published
    assert PublishResult.read(layout.publish_manifest(stepped.ctx.run_uri)) == published
    expected = pa.concat_tables(storage.read_parquet(f.uri) for f in stepped.filtered)
    parquet = storage.read_parquet(published.parquet_uri)
    assert parquet.num_rows == published.rows == expected.num_rows == sum(f.rows for f in stepped.filtered)
    assert parquet.column("candidate_item_id").to_pylist() == expected.column("candidate_item_id").to_pylist()
    assert set(published.categories) == set(stepped.catalog_plan.categories)
    assert published.rows_replaced == 0 and published.table == "similar_items"
    with sqlite3.connect(stepped.warehouse) as conn:
        rows = conn.execute(
            "SELECT query_item_id, candidate_item_id, rank, score FROM similar_items ORDER BY query_item_id, rank"
        ).fetchall()
    frame = parquet.to_pandas().sort_values(["query_item_id", "rank"])
    assert rows == list(zip(frame["query_item_id"], frame["candidate_item_id"], frame["rank"].astype(int), frame["score"]))
