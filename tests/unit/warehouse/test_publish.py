"""SQLite tests for the warehouse publishing layer."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from pss_ops.warehouse.publish import (
    SIMILAR_ITEMS_COLUMNS,
    default_warehouse_url,
    publish_similar_items,
    redact_url,
)

APP = "amazon_electronics"
DAY = datetime.date(2024, 5, 1)
NEXT_DAY = datetime.date(2024, 5, 2)
RUN = "run-20240501-0001"

# (category, query item, candidate item, rank, score); real-looking Amazon ASINs.
HEADPHONES = [
    ("headphones", "B0863TXGM3", "B0756CYWWD", 1, 0.9412),
    ("headphones", "B0863TXGM3", "B07G4MNFS1", 2, 0.9035),
    ("headphones", "B0756CYWWD", "B0863TXGM3", 1, 0.9412),
]
CHARGERS = [
    ("chargers", "B07DFX63KH", "B08L5M9BTJ", 1, 0.8871),
    ("chargers", "B08L5M9BTJ", "B07DFX63KH", 1, 0.8871),
]


def make_batch(rows: list[tuple[str, str, str, int, float]], *, day: datetime.date | str = DAY, app: str = APP) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "application": [app] * len(rows),
            "snapshot_date": pa.array([day] * len(rows)),
            "category": [r[0] for r in rows],
            "query_item_id": [r[1] for r in rows],
            "candidate_item_id": [r[2] for r in rows],
            "rank": pa.array([r[3] for r in rows], pa.int32()),
            "score": [r[4] for r in rows],
            "run_id": [RUN] * len(rows),
            "found_by": [FOUND_BY] * len(rows),
            "retriever_scores": [scores_json(r[4]) for r in rows],
        }
    )


FOUND_BY = "dense,lexical"


def scores_json(score: float) -> str:
    return f'{{"dense": {score}, "lexical": {score}}}'


def read_rows(db: Path, table: str = "similar_items") -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            f"SELECT {', '.join(SIMILAR_ITEMS_COLUMNS)} FROM {table} ORDER BY application, snapshot_date, category, query_item_id, rank"
        ).fetchall()


def expected(rows: list[tuple[str, str, str, int, float]], day: datetime.date = DAY, app: str = APP) -> list[tuple[object, ...]]:
    return sorted((app, day.isoformat(), c, q, cand, rank, score, RUN, FOUND_BY, scores_json(score)) for c, q, cand, rank, score in rows)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.sqlite"


def publish(db: Path, categories: list[str], *batches: pa.RecordBatch | pa.Table, day: datetime.date = DAY):
    return publish_similar_items(f"sqlite:///{db}", application=APP, snapshot_date=day, categories=categories, batches=batches)


def test_publish_creates_table_and_inserts_rows(db: Path) -> None:
    stats = publish(db, ["headphones", "chargers"], make_batch(HEADPHONES), pa.Table.from_batches([make_batch(CHARGERS)]))

    assert read_rows(db) == expected(HEADPHONES + CHARGERS)
    assert (stats.table, stats.rows_deleted) == ("similar_items", 0)
    assert stats.categories == ("headphones", "chargers")


def test_snapshot_date_may_be_iso_string(db: Path) -> None:
    publish(db, ["chargers"], make_batch(CHARGERS, day="2024-05-01"))

    assert read_rows(db) == expected(CHARGERS)


def test_republishing_same_data_is_idempotent(db: Path) -> None:
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    first = read_rows(db)

    stats = publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))

    assert read_rows(db) == first == expected(HEADPHONES + CHARGERS)
    assert stats.rows_deleted == 5


def test_publishing_one_category_replaces_only_that_slice(db: Path) -> None:
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    publish(db, ["headphones"], make_batch(HEADPHONES, day=NEXT_DAY), day=NEXT_DAY)
    changed = [("headphones", "B0863TXGM3", "B09JB8KPNW", 1, 0.9607)]

    stats = publish(db, ["headphones"], make_batch(changed))

    assert stats.rows_deleted == 3
    assert read_rows(db) == sorted(expected(changed + CHARGERS) + expected(HEADPHONES, day=NEXT_DAY))


def test_row_outside_categories_rolls_back_everything(db: Path) -> None:
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    before = read_rows(db)
    stray = [("laptops", "B0BSHF7WHW", "B0B3C3YH7Q", 1, 0.7712)]

    # The bad row sits in the second batch, so the first batch was already written when it is found.
    with pytest.raises(ValueError, match=r"category='laptops'.*B0BSHF7WHW"):
        publish(db, ["headphones"], make_batch(HEADPHONES[:1]), make_batch(HEADPHONES[1:] + stray))

    assert read_rows(db) == before


@pytest.mark.parametrize(
    ("batch", "column"),
    [
        (make_batch(CHARGERS, app="google_shopping"), "application"),
        (make_batch(CHARGERS, day=NEXT_DAY), "snapshot_date"),
        (make_batch(CHARGERS, day="May 1st"), "snapshot_date"),
    ],
)
def test_row_for_other_application_or_date_is_rejected(db: Path, batch: pa.RecordBatch, column: str) -> None:
    with pytest.raises(ValueError, match=rf"^{column}="):
        publish(db, ["chargers"], batch)

    assert read_rows(db) == []


def test_missing_column_is_named(db: Path) -> None:
    batch = make_batch(CHARGERS).drop_columns(["score"])

    with pytest.raises(ValueError, match="missing column.*score"):
        publish(db, ["chargers"], batch)


def test_empty_categories_are_rejected(db: Path) -> None:
    with pytest.raises(ValueError, match="categories"):
        publish(db, [], make_batch(CHARGERS))
    with pytest.raises(ValueError, match="categories"):
        publish_similar_items(f"sqlite:///{db}", application=APP, snapshot_date=DAY, categories="chargers", batches=[])


def test_latest_view_shows_each_applications_latest_snapshot(db: Path) -> None:
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    publish(db, ["chargers"], make_batch(CHARGERS, day=NEXT_DAY), day=NEXT_DAY)
    google = [("chargers", "google:13004519183466950120", "google:4587419612360287231", 1, 0.8123)]
    publish_similar_items(
        f"sqlite:///{db}",
        application="google_shopping",
        snapshot_date=DAY,
        categories=["chargers"],
        batches=[make_batch(google, app="google_shopping")],
    )

    assert read_rows(db, "similar_items_latest") == sorted(expected(CHARGERS, day=NEXT_DAY) + expected(google, app="google_shopping"))


def test_default_url_and_redaction(tmp_path: Path) -> None:
    assert default_warehouse_url(str(tmp_path)) == f"sqlite:///{tmp_path.resolve()}/warehouse.sqlite"
    redacted = redact_url("postgresql+psycopg://pss:hunter2@db.internal:5432/dw?options=-csearch_path%3Dpss")
    assert "hunter2" not in redacted
    assert redacted.startswith("postgresql+psycopg://pss:***@db.internal:5432/dw")
    assert "hunter2" not in redact_url("postgresql+psycopg://pss@db.internal/dw?password=hunter2")


def test_a_table_from_before_the_retriever_columns_gains_them_and_keeps_its_rows(db: Path) -> None:
    """An existing warehouse is migrated in place: the nullable columns are added, old rows read NULL there."""
    old_columns = [c for c in SIMILAR_ITEMS_COLUMNS if c not in ("found_by", "retriever_scores")]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE similar_items (application TEXT NOT NULL, snapshot_date DATE NOT NULL, category TEXT NOT NULL, "
            "query_item_id TEXT NOT NULL, candidate_item_id TEXT NOT NULL, rank INTEGER NOT NULL, score DOUBLE PRECISION NOT NULL, "
            "run_id TEXT NOT NULL, PRIMARY KEY (application, snapshot_date, category, query_item_id, rank))"
        )
        conn.execute("CREATE VIEW similar_items_latest AS SELECT s.* FROM similar_items s")
        old_row = "'old_app', '2024-04-01', 'headphones', 'a', 'b', 1, 0.5, 'run-old'"
        conn.execute(f"INSERT INTO similar_items ({', '.join(old_columns)}) VALUES ({old_row})")
    publish(db, ["headphones"], make_batch(HEADPHONES))
    rows = read_rows(db)
    assert ("old_app", "2024-04-01", "headphones", "a", "b", 1, 0.5, "run-old", None, None) in rows
    assert [r for r in rows if r[0] == APP] == expected(HEADPHONES)
    with sqlite3.connect(db) as conn:
        view_columns = [d[0] for d in conn.execute("SELECT * FROM similar_items_latest LIMIT 1").description]
    assert view_columns[-2:] == ["found_by", "retriever_scores"]


def test_a_batch_without_the_nullable_columns_publishes_them_as_null(db: Path) -> None:
    batch = make_batch(HEADPHONES)
    old = batch.select([n for n in batch.schema.names if n not in ("found_by", "retriever_scores")])
    publish(db, ["headphones"], old)
    assert {r[-2:] for r in read_rows(db)} == {(None, None)}
