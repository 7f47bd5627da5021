"""The SQLite publish's ADBC bulk path, on real SQLite files: stored values, coerced batches, errors, and the one transaction."""

from __future__ import annotations

import datetime
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pss_ops.warehouse.errors import WarehouseError
from pss_ops.warehouse.publish import SIMILAR_ITEMS_COLUMNS, PublishStats, publish_similar_items
from pss_ops.warehouse.schema import GROUPS_TABLE_NAME, arrow_schema

APP = "amazon_electronics"
DAY = datetime.date(2024, 5, 1)
RUN = "run-20240501-0001"


def batch(queries: list[str], **columns: Any) -> pa.Table:
    """similar_items rows in the warehouse's shape, two ranks per query; columns overrides any column."""
    n = 2 * len(queries)
    values: dict[str, Any] = {
        "application": pa.array([APP] * n),
        "snapshot_date": pa.array([DAY] * n, pa.date32()),
        "category": pa.array(["headphones"] * n),
        "query_item_id": pa.array([q for q in queries for _ in range(2)]),
        "candidate_item_id": pa.array([f"{q}-c{r}" for q in queries for r in (1, 2)]),
        "rank": pa.array([1, 2] * len(queries), pa.int32()),
        "score": pa.array([0.1 + 0.2, 1 / 3] * len(queries)),
        "run_id": pa.array([RUN] * n),
        "found_by": pa.array(["dense,lexical", None] * len(queries)),
        "retriever_scores": pa.array(['{"dense": 0.3, "lexical": 0.25}', ""] * len(queries)),
        "match_probability": pa.array([None, 0.875] * len(queries), pa.float64()),
    }
    values.update(columns)
    return pa.table(values)


def publish(db: Path, *batches: pa.Table, categories: tuple[str, ...] = ("headphones",), **kwargs: Any) -> PublishStats:
    return publish_similar_items(f"sqlite:///{db}", application=APP, snapshot_date=DAY, categories=categories, batches=batches, **kwargs)


def stored(db: Path, table: str = "similar_items") -> list[tuple[Any, ...]]:
    """Every row with each value's SQLite storage class, as a reader of the file sees them."""
    with sqlite3.connect(db) as conn:
        names = SIMILAR_ITEMS_COLUMNS if table == "similar_items" else tuple(arrow_schema(table).names)
        typed = ", ".join(f"{c}, typeof({c})" for c in names)
        return conn.execute(f"SELECT {typed} FROM {table} ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12").fetchall()


def test_values_are_stored_as_the_sqlite3_module_stores_them(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.sqlite"
    publish(db, batch(["B0863TXGM3", "Ünïcode 'quoted' \"id\""]))
    rows = stored(db)  # each column's value, then its storage class
    assert len(rows) == 4
    # snapshot_date as ISO text (what SQLAlchemy's SQLite DATE reads back), rank an integer, scores exact doubles.
    assert rows[0][2:4] == ("2024-05-01", "text") and rows[0][10:12] == (1, "integer")
    assert rows[0][12:14] == (0.1 + 0.2, "real") and rows[1][12:14] == (1 / 3, "real")
    # NULL stays NULL and an empty string stays an empty string.
    assert rows[0][16:18] == ("dense,lexical", "text") and rows[1][16:18] == (None, "null")
    assert rows[1][18:20] == ("", "text") and rows[0][20:22] == (None, "null") and rows[1][20] == 0.875
    assert {r[6] for r in rows} == {"B0863TXGM3", "Ünïcode 'quoted' \"id\""}


def test_batches_of_other_arrow_types_are_written_in_the_tables_types(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.sqlite"
    expected = tmp_path / "expected.sqlite"
    publish(expected, batch(["q1", "q2"]))
    loose = batch(
        ["q1", "q2"],
        snapshot_date=pa.array([DAY.isoformat()] * 4),  # ISO text
        category=pa.array(["headphones"] * 4).dictionary_encode(),  # as a Parquet dictionary column reads
        query_item_id=pa.array(["q1", "q1", "q2", "q2"], pa.large_string()),
        rank=pa.array([1, 2, 1, 2], pa.int64()),
        found_by=pa.array(["dense,lexical", None] * 2, pa.large_string()),
    ).drop_columns(["match_probability"])
    publish(db, loose.append_column("match_probability", pa.array([None, 0.875] * 2)))
    assert stored(db) == stored(expected)
    # A date64 column is checked row by row, then written as the publish's date.
    publish(db, batch(["q1", "q2"], snapshot_date=pa.array([DAY] * 4, pa.date64())))
    assert stored(db) == stored(expected)


def test_a_value_the_table_cannot_hold_is_a_value_error_naming_the_column(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.sqlite"
    publish(db, batch(["kept"]))
    before = stored(db)
    with pytest.raises(ValueError, match=r"^similar_items column rank can't be written as int32"):
        publish(db, batch(["q1"]), batch(["q2"], rank=pa.array([1, 2**40], pa.int64())))
    assert stored(db) == before


def test_a_row_sqlite_refuses_is_a_warehouse_error_and_rolls_back_both_tables(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.sqlite"
    groups = pa.table(
        {
            "application": [APP, APP],
            "snapshot_date": pa.array([DAY, DAY], pa.date32()),
            "category": ["headphones", "headphones"],
            "group_id": ["g-1", "g-1"],
            "item_id": ["q1", "q2"],
            "group_size": pa.array([2, 2], pa.int32()),
            "weakest_link": [0.9, 0.9],
            "run_id": [RUN, RUN],
        }
    )
    publish(db, batch(["q1", "q2"]), group_batches=[groups])
    before = stored(db), stored(db, GROUPS_TABLE_NAME)
    null_score = batch(["q3"], score=pa.array([0.5, None]))
    with pytest.raises(WarehouseError) as raised:
        publish(db, batch(["q4"]), null_score)
    assert str(raised.value) == f"warehouse sqlite:///{db}: publishing failed: NOT NULL constraint failed: similar_items.score"
    assert (stored(db), stored(db, GROUPS_TABLE_NAME)) == before


def test_before_commit_runs_inside_the_transaction_and_its_failure_rolls_back(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.sqlite"
    publish(db, batch(["old"]))
    seen: list[Any] = []

    def look(stats: PublishStats) -> None:
        # Another connection, as a reader of the warehouse: it still sees the old rows.
        with sqlite3.connect(db) as reader:
            seen.append(
                (stats.rows_deleted, stats.rows_inserted, reader.execute("SELECT DISTINCT query_item_id FROM similar_items").fetchall())
            )

    publish(db, batch(["new1", "new2"]), before_commit=look)
    assert seen == [(2, 4, [("old",)])]
    assert {r[6] for r in stored(db)} == {"new1", "new2"}

    def refuse(stats: PublishStats) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        publish(db, batch(["newer"]), before_commit=refuse)
    assert {r[6] for r in stored(db)} == {"new1", "new2"}


def test_a_publish_waits_for_another_writer_to_finish(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.sqlite"
    publish(db, batch(["first"]))
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock, as a second publish would
    released = threading.Event()

    def release() -> None:
        time.sleep(0.5)
        other.execute("COMMIT")
        released.set()

    threading.Thread(target=release).start()
    try:
        stats = publish(db, batch(["second"]))
    finally:
        released.wait(5)
        other.close()
    assert released.is_set() and stats.rows_deleted == 2
    assert {r[6] for r in stored(db)} == {"second"}
