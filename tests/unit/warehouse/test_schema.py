"""Each warehouse table's shape, parsed from sql/<table>.sql: what the DDL creates is what PSS writes."""

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
    # found_by, retriever_scores and match_probability came later: nullable, so rows published before them stay valid.
    nullable = ["found_by", "retriever_scores", "match_probability"]
    assert [c["name"] for c in reflected if c["nullable"]] == [c.name for c in schema.columns() if c.nullable] == nullable


def test_arrow_schema_and_sqlalchemy_table_follow_the_ddl() -> None:
    arrow = schema.arrow_schema()
    assert arrow.names == list(schema.column_names())
    assert arrow.field("snapshot_date").type == pa.date32() and arrow.field("rank").type == pa.int32()
    assert arrow.field("score").type == pa.float64() and arrow.field("query_item_id").type == pa.string()
    assert arrow.field("match_probability").type == pa.float64()
    assert schema.arrow_schema(schema.TABLE_NAME) == arrow
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
    monkeypatch.setattr(schema, "table_ddl", lambda table=schema.TABLE_NAME: ddl)
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


def test_duplicate_groups_columns_key_and_index_match_what_its_ddl_creates(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        ensure_schema(engine)
        inspector = sa.inspect(engine)
        reflected = inspector.get_columns(schema.GROUPS_TABLE_NAME)
        key = inspector.get_pk_constraint(schema.GROUPS_TABLE_NAME)["constrained_columns"]
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(schema.GROUPS_TABLE_NAME)}
    finally:
        engine.dispose()
    names = ["application", "snapshot_date", "category", "group_id", "item_id", "group_size", "weakest_link", "run_id"]
    assert [c["name"] for c in reflected] == list(schema.column_names(schema.GROUPS_TABLE_NAME)) == names
    assert [c.name for c in schema.columns(schema.GROUPS_TABLE_NAME) if c.primary_key] == key
    assert key == ["application", "snapshot_date", "category", "item_id"]
    assert not [c["name"] for c in reflected if c["nullable"]] and not [c for c in schema.columns(schema.GROUPS_TABLE_NAME) if c.nullable]
    assert [name for name, _ in schema.secondary_indexes(schema.GROUPS_TABLE_NAME)] == list(indexes) == ["duplicate_groups_group_idx"]
    assert indexes["duplicate_groups_group_idx"] == ["application", "snapshot_date", "category", "group_id"]
    # Each table's facts come from its own file: similar_items' index is not duplicate_groups'.
    assert [name for name, _ in schema.secondary_indexes()] == ["similar_items_candidate_idx"]


def test_duplicate_groups_arrow_schema_and_sqlalchemy_table_follow_its_ddl() -> None:
    arrow = schema.arrow_schema(schema.GROUPS_TABLE_NAME)
    assert arrow.names == list(schema.column_names(schema.GROUPS_TABLE_NAME))
    assert arrow.field("snapshot_date").type == pa.date32() and arrow.field("group_size").type == pa.int32()
    assert arrow.field("weakest_link").type == pa.float64() and arrow.field("group_id").type == pa.string()
    assert arrow != schema.arrow_schema()
    table = schema.sa_table(schema.GROUPS_TABLE_NAME)
    assert table.name == "duplicate_groups" and list(table.c.keys()) == list(arrow.names)
    assert isinstance(table.c.group_size.type, sa.Integer) and isinstance(table.c.weakest_link.type, sa.Double)
    assert [c.name for c in table.primary_key] == ["application", "snapshot_date", "category", "item_id"]
    assert schema.sa_table().name == "similar_items"


def test_an_unknown_table_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown warehouse table 'similar_itemz'"):
        schema.columns("similar_itemz")


def test_a_ddl_error_names_the_table_whose_file_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = schema.table_ddl
    no_key = real(schema.GROUPS_TABLE_NAME).replace("PRIMARY KEY (application, snapshot_date, category, item_id)", "")
    assert no_key != real(schema.GROUPS_TABLE_NAME)
    monkeypatch.setattr(schema, "table_ddl", lambda table=schema.TABLE_NAME: no_key if table == schema.GROUPS_TABLE_NAME else real(table))
    schema.columns.cache_clear()
    try:
        assert schema.columns()[0].name == "application"
        with pytest.raises(ValueError, match="duplicate_groups.sql declares no primary key"):
            schema.columns(schema.GROUPS_TABLE_NAME)
    finally:
        schema.columns.cache_clear()
