"""The similar_items shape, parsed from sql/similar_items.sql: what the DDL creates is what PSS writes."""

from __future__ import annotations

import datetime
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from pss_ops.warehouse import schema
from pss_ops.warehouse.publish import ensure_schema


def test_parsed_columns_match_the_table_the_ddl_creates(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        ensure_schema(engine)
        reflected = sa.inspect(engine).get_columns(schema.TABLE_NAME)
        key = sa.inspect(engine).get_pk_constraint(schema.TABLE_NAME)["constrained_columns"]
        view = [c["name"] for c in sa.inspect(engine).get_columns(schema.VIEW_NAME)]
    finally:
        engine.dispose()
    assert [c["name"] for c in reflected] == list(schema.column_names()) == view
    assert (
        [c.name for c in schema.columns() if c.primary_key] == key == ["application", "snapshot_date", "category", "query_item_id", "rank"]
    )
    # found_by and retriever_scores came later: nullable, so rows published before them stay valid.
    nullable = ["found_by", "retriever_scores"]
    assert [c["name"] for c in reflected if c["nullable"]] == [c.name for c in schema.columns() if c.nullable] == nullable


def test_arrow_schema_and_sqlalchemy_table_follow_the_ddl() -> None:
    arrow = schema.arrow_schema()
    assert arrow.names == list(schema.column_names())
    assert arrow.field("snapshot_date").type == pa.date32() and arrow.field("rank").type == pa.int32()
    assert arrow.field("score").type == pa.float64() and arrow.field("query_item_id").type == pa.string()
    table = schema.sa_table()
    assert list(table.c.keys()) == list(schema.column_names())
    assert isinstance(table.c.snapshot_date.type, sa.Date) and isinstance(table.c.score.type, sa.Double)
    assert [c.name for c in table.primary_key] == [c.name for c in schema.columns() if c.primary_key]


def test_view_ddl_per_dialect_and_an_unknown_dialect_is_refused() -> None:
    assert schema.view_ddl("postgresql").startswith("CREATE OR REPLACE VIEW similar_items_latest AS\nSELECT s.*")
    assert schema.view_ddl("sqlite").startswith("CREATE VIEW IF NOT EXISTS similar_items_latest AS\nSELECT s.*")
    with pytest.raises(ValueError, match="unsupported warehouse dialect 'mysql'"):
        schema.view_ddl("mysql")


def test_a_column_type_outside_the_supported_ones_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    ddl = schema.table_ddl().replace("score             DOUBLE PRECISION", "score             REAL")
    assert ddl != schema.table_ddl()
    monkeypatch.setattr(schema, "table_ddl", lambda: ddl)
    schema.columns.cache_clear()
    try:
        with pytest.raises(ValueError, match="column score has type REAL"):
            schema.columns()
    finally:
        schema.columns.cache_clear()


def test_snapshot_dates_round_trip_through_the_arrow_schema() -> None:
    row = {name: [None] for name in schema.column_names()} | {"snapshot_date": [datetime.date(2026, 11, 21)], "rank": [1]}
    table = pa.table(row).cast(schema.arrow_schema())
    assert table.column("snapshot_date").to_pylist() == [datetime.date(2026, 11, 21)]
