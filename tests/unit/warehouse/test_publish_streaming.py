"""Publish streams many filtered partitions into one Parquet and the warehouse, a bounded batch at a time."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pss_ops import layout, storage
from pss_ops.config import parse_config
from pss_ops.manifests import CatalogPartition, CatalogPlan, FilteredPartition, RunContext
from pss_ops.steps import publish as publish_step
from pss_ops.steps.plan import make_context
from pss_ops.warehouse import publish as warehouse
from pss_ops.warehouse.publish import SIMILAR_ITEMS_COLUMNS

DAY = dt.date(2024, 5, 1)
PARTITIONS = 23
CATEGORIES = ("audio", "cameras", "phones")


def filtered_rows(number: int, ctx: RunContext) -> pa.Table:
    """One partition's published rows: up to 3 queries x up to 10 ranks, sizes varying by partition."""
    rng = np.random.default_rng(number)
    queries = [f"p{number:02d}-q{q}" for q in range(1 + number % 3)]
    rows = [(q, f"{q}-c{r}", r, float(rng.random())) for q in queries for r in range(1, 2 + (number * 7) % 10)]
    n = len(rows)
    return pa.table(
        {
            "application": [ctx.application] * n,
            "snapshot_date": pa.array([DAY] * n, pa.date32()),
            "category": [CATEGORIES[number % 3]] * n,
            "query_item_id": [r[0] for r in rows],
            "candidate_item_id": [r[1] for r in rows],
            "rank": pa.array([r[2] for r in rows], pa.int32()),
            "score": [r[3] for r in rows],
            "run_id": [ctx.run_id] * n,
            "found_by": ["dense,lexical"] * n,
            "retriever_scores": [f'{{"dense": {r[3]}, "lexical": {r[3]}}}' for r in rows],
            # As a matcher's post-filter writes it; NULL on every third partition, as without one.
            "match_probability": pa.array([None if number % 3 == 2 else r[3] ** 2 for r in rows], pa.float64()),
        }
    )


@pytest.fixture
def run(tmp_path: Path) -> tuple[RunContext, CatalogPlan, pa.Table]:
    """A run directory holding only what publish reads: the plan and 23 filtered partitions with manifests."""
    config = parse_config({"application": "publish_test", "features": [{"type": "char_ngram", "dims": 64}]})
    ctx = make_context(
        config, catalog_uri="unused.csv", run_uri=str(tmp_path / "run"), snapshot_date=DAY, run_id="run-publish", cache_uri="x"
    )
    partitions, tables = [], []
    for number in range(PARTITIONS):
        name = f"part-{number:05d}"
        table = filtered_rows(number, ctx)
        uri = layout.filtered(ctx.run_uri, name)
        storage.write_parquet(uri, table)
        FilteredPartition(
            name=name, uri=uri, rows=table.num_rows, queries=0, queries_short_of_k=0, candidates_removed={}, seconds=0.0
        ).write(layout.filter_manifest(ctx.run_uri, name))
        partitions.append(CatalogPartition(name=name, uri="unused", scope=CATEGORIES[number % 3], rows=0))
        tables.append(table)
    plan = CatalogPlan(
        partitions=tuple(partitions),
        categories=CATEGORIES,
        rows_read=0,
        rows_accepted=0,
        rows_rejected=0,
        rows_out_of_scope=0,
        reject_reasons={},
        rejects_uri="unused",
        seconds=0.0,
    )
    return ctx, plan, pa.concat_tables(tables)


def sorted_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda r: (r[2], r[3], r[5]))


def table_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    columns = [table.column(c).to_pylist() for c in SIMILAR_ITEMS_COLUMNS]
    columns[1] = [d.isoformat() for d in columns[1]]
    return sorted_rows(list(zip(*columns)))


def sqlite_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted_rows(conn.execute(f"SELECT {', '.join(SIMILAR_ITEMS_COLUMNS)} FROM similar_items").fetchall())


def test_publish_streams_every_partition_in_bounded_batches(
    run: tuple[RunContext, CatalogPlan, pa.Table], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, plan, expected = run
    monkeypatch.setattr(publish_step, "BATCH_ROWS", 4)
    seen: list[int] = []
    real_publish = publish_step.publish_similar_items

    def spy(url: str, *, batches: Any, **kwargs: Any) -> warehouse.PublishStats:
        def counted() -> Any:
            for batch in batches:
                seen.append(batch.num_rows)
                yield batch

        return real_publish(url, batches=counted(), **kwargs)

    def whole_read(*_: Any, **__: Any) -> None:
        raise AssertionError("publish read a whole partition instead of streaming it")

    monkeypatch.setattr(publish_step, "publish_similar_items", spy)
    monkeypatch.setattr(storage, "read_parquet", whole_read)
    db = tmp_path / "warehouse.sqlite"
    result = publish_step.publish(ctx, plan, f"sqlite:///{db}")

    assert result.rows == expected.num_rows == sum(seen) > PARTITIONS * 4
    assert max(seen) <= 4 and len(seen) >= PARTITIONS
    monkeypatch.undo()
    parquet = storage.read_parquet(result.parquet_uri)
    assert parquet.column_names == list(SIMILAR_ITEMS_COLUMNS)
    assert table_rows(parquet) == table_rows(expected)
    assert sqlite_rows(db) == table_rows(expected)


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["rebuilds-index", "inserts-into-index"])
def test_large_sqlite_publish_rebuilds_the_candidate_index_in_the_same_transaction(
    run: tuple[RunContext, CatalogPlan, pa.Table], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int
) -> None:
    ctx, plan, expected = run
    monkeypatch.setattr(warehouse, "SQLITE_REINDEX_MIN_ROWS", threshold)
    db = tmp_path / "warehouse.sqlite"
    url = f"sqlite:///{db}"
    first = publish_step.publish(ctx, plan, url)
    assert sqlite_rows(db) == table_rows(expected)

    def index_names() -> list[str]:
        with sqlite3.connect(db) as conn:
            return sorted(
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name = 'similar_items'"
                )
            )

    assert index_names() == ["similar_items_candidate_idx"]
    with sqlite3.connect(db) as conn:
        plan_text = " ".join(
            str(r[-1])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM similar_items WHERE application = ? AND snapshot_date = ? AND candidate_item_id = ?",
                (ctx.application, DAY.isoformat(), "x"),
            )
        )
    assert "similar_items_candidate_idx" in plan_text

    # A publish that fails part-way (a stray category in a late batch) leaves rows and index as they were.
    stray = expected.slice(0, 1).set_column(2, "category", pa.array(["laptops"]))
    with pytest.raises(ValueError, match="category='laptops'"):
        warehouse.publish_similar_items(
            url,
            application=ctx.application,
            snapshot_date=DAY,
            categories=CATEGORIES,
            batches=[expected, stray],
            expected_rows=expected.num_rows + 1,
        )
    assert sqlite_rows(db) == table_rows(expected)
    assert index_names() == ["similar_items_candidate_idx"]
    again = publish_step.publish(ctx, plan, url)
    assert again.rows_replaced == first.rows == expected.num_rows
    assert sqlite_rows(db) == table_rows(expected)
