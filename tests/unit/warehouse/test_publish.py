"""SQLite tests for the warehouse publishing layer."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from pss_ops.warehouse.connection import default_warehouse_url, redact_url
from pss_ops.warehouse.publish import (
    DUPLICATE_GROUPS_COLUMNS,
    SIMILAR_ITEMS_COLUMNS,
    PublishStats,
    ensure_schema,
    publish_similar_items,
)
from pss_ops.warehouse.schema import GROUPS_TABLE_NAME, arrow_schema

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
            "match_probability": [probability(r[4]) for r in rows],
        }
    )


FOUND_BY = "dense,lexical"


def scores_json(score: float) -> str:
    return f'{{"dense": {score}, "lexical": {score}}}'


def probability(score: float) -> float:
    """A made-up matcher's calibrated probability for a pair of this score: distinct from the score itself."""
    return round(score**4, 6)


def read_rows(db: Path, table: str = "similar_items") -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            f"SELECT {', '.join(SIMILAR_ITEMS_COLUMNS)} FROM {table} ORDER BY application, snapshot_date, category, query_item_id, rank"
        ).fetchall()


def expected(rows: list[tuple[str, str, str, int, float]], day: datetime.date = DAY, app: str = APP) -> list[tuple[object, ...]]:
    return sorted(
        (app, day.isoformat(), c, q, cand, rank, score, RUN, FOUND_BY, scores_json(score), probability(score))
        for c, q, cand, rank, score in rows
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.sqlite"


def publish(
    db: Path,
    categories: list[str],
    *batches: pa.RecordBatch | pa.Table,
    day: datetime.date = DAY,
    groups: tuple[pa.RecordBatch | pa.Table, ...] = (),
) -> PublishStats:
    return publish_similar_items(
        f"sqlite:///{db}", application=APP, snapshot_date=day, categories=categories, batches=batches, group_batches=groups
    )


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

    with pytest.raises(ValueError, match="similar_items batch is missing column.*score"):
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


# similar_items as earlier versions created it, with their view and without duplicate_groups.
_OLD_KEY_COLUMNS = (
    "application TEXT NOT NULL, snapshot_date DATE NOT NULL, category TEXT NOT NULL, query_item_id TEXT NOT NULL, "
    "candidate_item_id TEXT NOT NULL, rank INTEGER NOT NULL, score DOUBLE PRECISION NOT NULL, run_id TEXT NOT NULL"
)
OLD_TABLES = {
    "before-retrievers": f"CREATE TABLE similar_items ({_OLD_KEY_COLUMNS}, "
    "PRIMARY KEY (application, snapshot_date, category, query_item_id, rank))",
    "before-matchers": f"CREATE TABLE similar_items ({_OLD_KEY_COLUMNS}, found_by TEXT, retriever_scores TEXT, "
    "PRIMARY KEY (application, snapshot_date, category, query_item_id, rank))",
}


@pytest.mark.parametrize("old_ddl", OLD_TABLES.values(), ids=OLD_TABLES.keys())
def test_a_table_from_an_older_version_gains_the_new_columns_and_duplicate_groups(db: Path, old_ddl: str) -> None:
    """An existing warehouse is migrated in place: the nullable columns are added (old rows read NULL there),
    the view shows them, duplicate_groups is created with its index, and the next publish fills all of it."""
    old_columns = [c for c in SIMILAR_ITEMS_COLUMNS if c not in ("found_by", "retriever_scores", "match_probability")]
    with sqlite3.connect(db) as conn:
        conn.execute(old_ddl)
        conn.execute("CREATE INDEX similar_items_candidate_idx ON similar_items (application, snapshot_date, candidate_item_id)")
        conn.execute("CREATE VIEW similar_items_latest AS SELECT s.* FROM similar_items s")
        old_row = "'old_app', '2024-04-01', 'headphones', 'a', 'b', 1, 0.5, 'run-old'"
        conn.execute(f"INSERT INTO similar_items ({', '.join(old_columns)}) VALUES ({old_row})")
    stats = publish(db, ["headphones"], make_batch(HEADPHONES), groups=(make_groups(HEADPHONE_GROUPS),))
    rows = read_rows(db)
    assert ("old_app", "2024-04-01", "headphones", "a", "b", 1, 0.5, "run-old", None, None, None) in rows
    assert [r for r in rows if r[0] == APP] == expected(HEADPHONES)
    assert all(r[-1] is not None for r in rows if r[0] == APP)
    assert read_groups(db) == expected_groups(HEADPHONE_GROUPS)
    assert (stats.group_rows_deleted, stats.group_rows_inserted) == (0, len(HEADPHONE_GROUPS))
    with sqlite3.connect(db) as conn:
        view_columns = [d[0] for d in conn.execute("SELECT * FROM similar_items_latest LIMIT 1").description]
        group_indexes = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'duplicate_groups'")
        ]
    assert view_columns == list(SIMILAR_ITEMS_COLUMNS)
    assert "duplicate_groups_group_idx" in group_indexes


@pytest.mark.parametrize(
    "dropped", [("match_probability",), ("found_by", "retriever_scores", "match_probability")], ids=["no-matcher", "no-retrievers"]
)
def test_a_batch_without_the_nullable_columns_publishes_them_as_null(db: Path, dropped: tuple[str, ...]) -> None:
    batch = make_batch(HEADPHONES)
    old = batch.select([n for n in batch.schema.names if n not in dropped])
    publish(db, ["headphones"], old)
    rows = read_rows(db)
    assert len(rows) == len(HEADPHONES)
    for name in SIMILAR_ITEMS_COLUMNS:
        values = {row[SIMILAR_ITEMS_COLUMNS.index(name)] for row in rows}
        assert (values == {None}) == (name in dropped), name


def test_a_second_ensure_schema_on_a_current_warehouse_runs_no_ddl(db: Path) -> None:
    """A current schema is left alone: re-running its DDL would take locks that queue behind readers."""
    engine = sa.create_engine(f"sqlite:///{db}")
    executed: list[str] = []

    def on_execute(conn: object, cursor: object, statement: str, *args: object) -> None:
        executed.append(statement)

    try:
        ensure_schema(engine)
        sa.event.listen(engine, "before_cursor_execute", on_execute)
        ensure_schema(engine)
    finally:
        engine.dispose()
    assert executed, "the listener sees ensure_schema's statements"
    assert not [s for s in executed if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))]


# Duplicate groups: (category, group id, item id, group size, weakest link), one row per member.
HEADPHONE_GROUPS = [
    ("headphones", "g-3f2a", "B0863TXGM3", 2, 0.9712),
    ("headphones", "g-3f2a", "B0756CYWWD", 2, 0.9712),
]
CHARGER_GROUPS = [
    ("chargers", "g-81c0", "B07DFX63KH", 3, 0.9134),
    ("chargers", "g-81c0", "B08L5M9BTJ", 3, 0.9134),
    ("chargers", "g-81c0", "B08JD5N8MY", 3, 0.9134),
]


def make_groups(rows: list[tuple[str, str, str, int, float]], *, day: datetime.date | str = DAY, app: str = APP) -> pa.Table:
    table = pa.table(
        {
            "application": [app] * len(rows),
            "snapshot_date": [day] * len(rows),
            "category": [r[0] for r in rows],
            "group_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "group_size": [r[3] for r in rows],
            "weakest_link": [r[4] for r in rows],
            "run_id": [RUN] * len(rows),
        }
    )
    return table if isinstance(day, str) else table.cast(arrow_schema(GROUPS_TABLE_NAME))


def read_groups(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            f"SELECT {', '.join(DUPLICATE_GROUPS_COLUMNS)} FROM duplicate_groups ORDER BY application, snapshot_date, category, item_id"
        ).fetchall()


def expected_groups(rows: list[tuple[str, str, str, int, float]], day: datetime.date = DAY) -> list[tuple[object, ...]]:
    return sorted((APP, day.isoformat(), c, g, item, size, weakest, RUN) for c, g, item, size, weakest in rows)


def test_groups_replace_their_slice_and_leave_other_categories_and_dates_alone(db: Path) -> None:
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS), groups=(make_groups(HEADPHONE_GROUPS + CHARGER_GROUPS),))
    publish(db, ["headphones"], make_batch(HEADPHONES, day=NEXT_DAY), day=NEXT_DAY, groups=(make_groups(HEADPHONE_GROUPS, day=NEXT_DAY),))
    regrouped = [("headphones", "g-77d1", "B0863TXGM3", 2, 0.9301), ("headphones", "g-77d1", "B07G4MNFS1", 2, 0.9301)]

    stats = publish(
        db, ["headphones"], make_batch(HEADPHONES), groups=(make_groups(regrouped[:1]), make_groups(regrouped[1:], day="2024-05-01"))
    )

    assert (stats.rows_deleted, stats.rows_inserted) == (len(HEADPHONES), len(HEADPHONES))
    assert (stats.group_rows_deleted, stats.group_rows_inserted) == (len(HEADPHONE_GROUPS), len(regrouped))
    assert read_groups(db) == sorted(expected_groups(regrouped + CHARGER_GROUPS) + expected_groups(HEADPHONE_GROUPS, day=NEXT_DAY))
    assert read_rows(db) == sorted(expected(HEADPHONES + CHARGERS) + expected(HEADPHONES, day=NEXT_DAY))


def test_a_rerun_without_groups_leaves_none_in_its_slice(db: Path) -> None:
    """A run without a matcher publishes no groups: the previous run's groups of that slice must not linger."""
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS), groups=(make_groups(HEADPHONE_GROUPS + CHARGER_GROUPS),))

    stats = publish(db, ["chargers"], make_batch(CHARGERS))

    assert (stats.group_rows_deleted, stats.group_rows_inserted) == (len(CHARGER_GROUPS), 0)
    assert read_groups(db) == expected_groups(HEADPHONE_GROUPS)


def test_a_bad_group_row_after_good_rows_rolls_back_both_tables(db: Path) -> None:
    publish(db, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS), groups=(make_groups(HEADPHONE_GROUPS + CHARGER_GROUPS),))
    items, groups = read_rows(db), read_groups(db)
    changed = [("headphones", "B0863TXGM3", "B09JB8KPNW", 1, 0.9607)]
    stray = [("laptops", "g-0b1e", "B0BSHF7WHW", 2, 0.95)]

    # similar_items is replaced first, so its new rows and the first group batch are written when the stray is found.
    with pytest.raises(ValueError, match=r"category='laptops'.*B0BSHF7WHW"):
        publish(db, ["headphones"], make_batch(changed), groups=(make_groups(HEADPHONE_GROUPS), make_groups(stray)))
    with pytest.raises(ValueError, match=r"duplicate_groups batch is missing column\(s\) weakest_link"):
        publish(db, ["headphones"], make_batch(changed), groups=(make_groups(HEADPHONE_GROUPS).drop_columns(["weakest_link"]),))
    with pytest.raises(ValueError, match=r"^application='google_shopping'"):
        publish(db, ["headphones"], make_batch(changed), groups=(make_groups(HEADPHONE_GROUPS, app="google_shopping"),))

    assert read_rows(db) == items
    assert read_groups(db) == groups


def test_a_bad_similar_items_row_leaves_the_groups_as_they_were(db: Path) -> None:
    publish(db, ["headphones"], make_batch(HEADPHONES), groups=(make_groups(HEADPHONE_GROUPS),))
    items, groups = read_rows(db), read_groups(db)
    regrouped = [("headphones", "g-77d1", "B0863TXGM3", 2, 0.9301), ("headphones", "g-77d1", "B07G4MNFS1", 2, 0.9301)]

    with pytest.raises(ValueError, match=r"^snapshot_date="):
        publish(db, ["headphones"], make_batch(HEADPHONES, day=NEXT_DAY), groups=(make_groups(regrouped),))

    assert (read_rows(db), read_groups(db)) == (items, groups)


def test_a_single_table_instead_of_an_iterable_of_them_is_refused(db: Path) -> None:
    with pytest.raises(TypeError, match="group_batches must be an iterable"):
        publish_similar_items(
            f"sqlite:///{db}",
            application=APP,
            snapshot_date=DAY,
            categories=["headphones"],
            batches=[],
            group_batches=make_groups(HEADPHONE_GROUPS),
        )
    assert not db.exists(), "refused before the warehouse is touched"
