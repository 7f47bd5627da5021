"""PostgreSQL tests for the warehouse publishing layer (needs the server on 127.0.0.1:5432)."""

from __future__ import annotations

import datetime
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from pss_ops.warehouse.publish import (
    DUPLICATE_GROUPS_COLUMNS,
    SIMILAR_ITEMS_COLUMNS,
    PublishStats,
    ensure_schema,
    publish_similar_items,
)
from pss_ops.warehouse.schema import GROUPS_TABLE_NAME, arrow_schema

pytestmark = pytest.mark.postgres

SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
APP = "amazon_electronics"
DAY = datetime.date(2024, 5, 1)
NEXT_DAY = datetime.date(2024, 5, 2)
RUN = "run-20240501-0001"

HEADPHONES = [
    ("headphones", "B0863TXGM3", "B0756CYWWD", 1, 0.9412),
    ("headphones", "B0863TXGM3", "B07G4MNFS1", 2, 0.9035),
    ("headphones", "B0756CYWWD", "B0863TXGM3", 1, 0.9412),
]
CHARGERS = [
    ("chargers", "B07DFX63KH", "B08L5M9BTJ", 1, 0.8871),
    ("chargers", "B08L5M9BTJ", "B07DFX63KH", 1, 0.8871),
]


@pytest.fixture
def schema_url() -> Iterator[tuple[str, str]]:
    """A fresh schema and a URL whose search_path points at it; the schema is dropped afterwards."""
    schema = f"pss_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVER_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield schema, f"{SERVER_URL}?options=-csearch_path%3D{schema}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


def make_batch(rows: list[tuple[str, str, str, int, float]], *, day: datetime.date | str = DAY) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "application": [APP] * len(rows),
            "snapshot_date": pa.array([day] * len(rows)),
            "category": [r[0] for r in rows],
            "query_item_id": [r[1] for r in rows],
            "candidate_item_id": [r[2] for r in rows],
            "rank": pa.array([r[3] for r in rows], pa.int32()),
            "score": [r[4] for r in rows],
            "run_id": [RUN] * len(rows),
        }
    )


def expected(rows: list[tuple[str, str, str, int, float]], day: datetime.date = DAY) -> list[tuple[Any, ...]]:
    # The batches carry no found_by / retriever_scores / match_probability (nullable): they are published as NULL.
    return sorted((APP, day, c, q, cand, rank, score, RUN, None, None, None) for c, q, cand, rank, score in rows)


def read_rows(url: str, relation: str = "similar_items") -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.exec_driver_sql(
                f"SELECT {', '.join(SIMILAR_ITEMS_COLUMNS)} FROM {relation} "
                "ORDER BY application, snapshot_date, category, query_item_id, rank"
            )
            return [tuple(row) for row in result]
    finally:
        engine.dispose()


def publish(
    url: str, categories: list[str], *batches: pa.RecordBatch, day: datetime.date = DAY, groups: tuple[pa.Table, ...] = ()
) -> PublishStats:
    return publish_similar_items(url, application=APP, snapshot_date=day, categories=categories, batches=batches, group_batches=groups)


# Duplicate groups: (category, group id, item id, group size, weakest link), one row per member.
HEADPHONE_GROUPS = [
    ("headphones", "g-3f2a", "B0863TXGM3", 2, 0.9712),
    ("headphones", "g-3f2a", "B0756CYWWD", 2, 0.9712),
]
CHARGER_GROUPS = [
    ("chargers", "g-81c0", "B07DFX63KH", 2, 0.9134),
    ("chargers", "g-81c0", "B08L5M9BTJ", 2, 0.9134),
]


def make_groups(rows: list[tuple[str, str, str, int, float]], *, day: datetime.date = DAY) -> pa.Table:
    columns = {
        "application": [APP] * len(rows),
        "snapshot_date": [day] * len(rows),
        "category": [r[0] for r in rows],
        "group_id": [r[1] for r in rows],
        "item_id": [r[2] for r in rows],
        "group_size": [r[3] for r in rows],
        "weakest_link": [r[4] for r in rows],
        "run_id": [RUN] * len(rows),
    }
    return pa.table(columns).cast(arrow_schema(GROUPS_TABLE_NAME))


def expected_groups(rows: list[tuple[str, str, str, int, float]], day: datetime.date = DAY) -> list[tuple[Any, ...]]:
    return sorted((APP, day, c, g, item, size, weakest, RUN) for c, g, item, size, weakest in rows)


def read_groups(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.exec_driver_sql(
                f"SELECT {', '.join(DUPLICATE_GROUPS_COLUMNS)} FROM duplicate_groups ORDER BY application, snapshot_date, category, item_id"
            )
            return [tuple(row) for row in result]
    finally:
        engine.dispose()


def test_publish_creates_schema_objects_in_search_path_schema(schema_url: tuple[str, str]) -> None:
    schema, url = schema_url

    stats = publish(url, ["headphones", "chargers"], make_batch(HEADPHONES), make_batch(CHARGERS, day="2024-05-01"))

    assert read_rows(url) == expected(HEADPHONES + CHARGERS)
    assert stats.rows_deleted == 0
    engine = sa.create_engine(SERVER_URL)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = :schema ORDER BY table_name"),
                {"schema": schema},
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in found] == [(schema, "duplicate_groups"), (schema, "similar_items"), (schema, "similar_items_latest")]


def test_republish_is_idempotent_and_replaces_only_its_slice(schema_url: tuple[str, str]) -> None:
    _, url = schema_url
    publish(url, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    publish(url, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    assert read_rows(url) == expected(HEADPHONES + CHARGERS)

    publish(url, ["headphones"], make_batch(HEADPHONES, day=NEXT_DAY), day=NEXT_DAY)
    changed = [("headphones", "B0863TXGM3", "B09JB8KPNW", 1, 0.9607)]
    stats = publish(url, ["headphones"], make_batch(changed))

    assert stats.rows_deleted == 3
    assert read_rows(url) == sorted(expected(changed + CHARGERS) + expected(HEADPHONES, day=NEXT_DAY))
    assert read_rows(url, "similar_items_latest") == expected(HEADPHONES, day=NEXT_DAY)


def test_invalid_row_rolls_back_everything(schema_url: tuple[str, str]) -> None:
    _, url = schema_url
    publish(url, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    before = read_rows(url)
    stray = [("laptops", "B0BSHF7WHW", "B0B3C3YH7Q", 1, 0.7712)]

    with pytest.raises(ValueError, match=r"category='laptops'.*B0BSHF7WHW"):
        publish(url, ["headphones"], make_batch(HEADPHONES[:1]), make_batch(HEADPHONES[1:] + stray))
    with pytest.raises(ValueError, match="missing column.*candidate_item_id"):
        publish(url, ["chargers"], make_batch(CHARGERS).drop_columns(["candidate_item_id"]))

    assert read_rows(url) == before


def test_bulk_path_uses_copy_not_insert(schema_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = schema_url
    copies: list[str] = []
    statements: list[str] = []
    original_copy = psycopg.Cursor.copy

    def spy_copy(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        copies.append(str(statement))
        return original_copy(self, statement, *args, **kwargs)

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy_copy)
    rows = [("headphones", f"B0{q:08d}", f"B1{q * 7 + r:08d}", r, 1.0 - r / 100) for q in range(1000) for r in range(1, 6)]
    sa.event.listen(sa.Engine, "before_cursor_execute", on_execute)
    try:
        publish(url, ["headphones"], make_batch(rows[:2500]), make_batch(rows[2500:]))
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", on_execute)

    assert len(read_rows(url)) == 5000
    assert copies and all(c.startswith("COPY similar_items (") for c in copies)
    assert any(re.search(r"^\s*DELETE FROM similar_items\b", s) for s in statements)  # the spy does see our statements
    assert not [s for s in statements if re.search(r"\bINSERT\s+INTO\s+similar_items\b", s, re.IGNORECASE)]


def test_concurrent_reader_sees_old_rows_until_commit(schema_url: tuple[str, str]) -> None:
    _, url = schema_url
    publish(url, ["headphones"], make_batch(HEADPHONES))
    new_rows = [("headphones", f"B0{q:08d}", "B0863TXGM3", 1, 0.5) for q in range(10)]
    written = threading.Event()
    reader_checked = threading.Event()
    errors: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        yield make_batch(new_rows[:5])
        written.set()  # DELETE and the first COPY are done, the transaction is still open
        assert reader_checked.wait(30), "reader never checked"
        yield make_batch(new_rows[5:])

    def run() -> None:
        try:
            publish_similar_items(url, application=APP, snapshot_date=DAY, categories=["headphones"], batches=batches())
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
            written.set()

    publisher = threading.Thread(target=run)
    publisher.start()
    try:
        assert written.wait(30), "publisher never wrote its first batch"
        assert not errors, errors
        during = read_rows(url)
    finally:
        reader_checked.set()
        publisher.join(30)
    assert not publisher.is_alive()
    assert not errors, errors

    assert during == expected(HEADPHONES)
    assert read_rows(url) == expected(new_rows)


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


def create_old_warehouse(url: str, old_ddl: str) -> None:
    """similar_items from an older version, its index and view, one old row; no duplicate_groups."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(old_ddl)
            conn.exec_driver_sql(
                "CREATE INDEX similar_items_candidate_idx ON similar_items (application, snapshot_date, candidate_item_id)"
            )
            conn.exec_driver_sql("CREATE VIEW similar_items_latest AS SELECT s.* FROM similar_items s")
            conn.exec_driver_sql(
                "INSERT INTO similar_items (application, snapshot_date, category, query_item_id, candidate_item_id, rank, score, run_id) "
                "VALUES ('old_app', '2024-04-01', 'headphones', 'a', 'b', 1, 0.5, 'run-old')"
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("old_ddl", OLD_TABLES.values(), ids=OLD_TABLES.keys())
def test_a_table_from_an_older_version_gains_the_new_columns_the_view_shows_them_and_groups_appear(
    schema_url: tuple[str, str], old_ddl: str
) -> None:
    """PostgreSQL expands a view's * when it is created: after ALTER TABLE ADD COLUMN the view is recreated."""
    schema, url = schema_url
    create_old_warehouse(url, old_ddl)
    batch = make_batch(HEADPHONES)
    found_by = pa.array(["dense,lexical"] * batch.num_rows)
    scores = pa.array([f'{{"dense": {r[4]}, "lexical": {r[4]}}}' for r in HEADPHONES])
    probabilities = pa.array([0.97, 0.41, 0.97])
    batch = batch.append_column("found_by", found_by).append_column("retriever_scores", scores)
    stats = publish(url, ["headphones"], batch.append_column("match_probability", probabilities), groups=(make_groups(HEADPHONE_GROUPS),))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            view_columns = list(conn.exec_driver_sql("SELECT * FROM similar_items_latest LIMIT 0").keys())
            lexical, probability = zip(
                *conn.exec_driver_sql(
                    "SELECT (retriever_scores::jsonb ->> 'lexical')::float, match_probability FROM similar_items "
                    "WHERE application = %(app)s ORDER BY query_item_id DESC, rank",
                    {"app": APP},
                ).all()
            )
            column_type = conn.execute(
                sa.text(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = :schema "
                    "AND table_name = 'similar_items' AND column_name = 'match_probability'"
                ),
                {"schema": schema},
            ).scalar_one()
            group_index = conn.execute(
                sa.text(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = :schema AND tablename = 'duplicate_groups' "
                    "AND indexname = 'duplicate_groups_group_idx'"
                ),
                {"schema": schema},
            ).scalar_one()
    finally:
        engine.dispose()
    assert view_columns == list(SIMILAR_ITEMS_COLUMNS)
    assert ("old_app", datetime.date(2024, 4, 1), "headphones", "a", "b", 1, 0.5, "run-old", None, None, None) in read_rows(url)
    assert sorted(lexical) == sorted(r[4] for r in HEADPHONES)
    assert list(probability) == probabilities.to_pylist() and column_type == "double precision"
    assert read_groups(url) == expected_groups(HEADPHONE_GROUPS) and stats.group_rows_inserted == 2
    assert "(application, snapshot_date, category, group_id)" in group_index


def test_groups_replace_their_slice_and_a_bad_group_row_rolls_back_both_tables(schema_url: tuple[str, str]) -> None:
    _, url = schema_url
    publish(url, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS), groups=(make_groups(HEADPHONE_GROUPS + CHARGER_GROUPS),))
    publish(url, ["headphones"], make_batch(HEADPHONES, day=NEXT_DAY), day=NEXT_DAY, groups=(make_groups(HEADPHONE_GROUPS, day=NEXT_DAY),))
    regrouped = [("headphones", "g-77d1", "B0863TXGM3", 2, 0.9301), ("headphones", "g-77d1", "B07G4MNFS1", 2, 0.9301)]

    stats = publish(url, ["headphones"], make_batch(HEADPHONES), groups=(make_groups(regrouped),))

    assert (stats.group_rows_deleted, stats.group_rows_inserted) == (2, 2)
    assert read_groups(url) == sorted(expected_groups(regrouped + CHARGER_GROUPS) + expected_groups(HEADPHONE_GROUPS, day=NEXT_DAY))
    items, groups = read_rows(url), read_groups(url)

    # The new similar_items rows and the first group batch are already COPYed when the stray row is found.
    changed = [("headphones", "B0863TXGM3", "B09JB8KPNW", 1, 0.9607)]
    stray = [("laptops", "g-0b1e", "B0BSHF7WHW", 2, 0.95)]
    with pytest.raises(ValueError, match=r"category='laptops'.*B0BSHF7WHW"):
        publish(url, ["headphones"], make_batch(changed), groups=(make_groups(HEADPHONE_GROUPS), make_groups(stray)))
    # A group row the table refuses (NULL in a NOT NULL column) fails in the database: both tables still roll back.
    with pytest.raises(psycopg.errors.NotNullViolation, match="group_size"):
        publish(
            url,
            ["headphones"],
            make_batch(changed),
            groups=(make_groups(HEADPHONE_GROUPS).set_column(5, "group_size", pa.nulls(2, pa.int32())),),
        )
    assert (read_rows(url), read_groups(url)) == (items, groups)

    # A rerun without a matcher publishes no groups and leaves none in its slice.
    stats = publish(url, ["chargers"], make_batch(CHARGERS))
    assert (stats.group_rows_deleted, stats.group_rows_inserted) == (2, 0)
    assert read_groups(url) == sorted(expected_groups(regrouped) + expected_groups(HEADPHONE_GROUPS, day=NEXT_DAY))


def test_groups_use_copy_too(schema_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = schema_url
    copies: list[str] = []
    original_copy = psycopg.Cursor.copy

    def spy_copy(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        copies.append(str(statement))
        return original_copy(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy_copy)
    publish(url, ["headphones"], make_batch(HEADPHONES), groups=(make_groups(HEADPHONE_GROUPS),))

    assert [c.split(" (")[0] for c in copies] == ["COPY similar_items", "COPY duplicate_groups"]
    assert read_groups(url) == expected_groups(HEADPHONE_GROUPS)


def test_an_old_warehouse_gains_duplicate_groups_under_the_schema_lock(schema_url: tuple[str, str]) -> None:
    """Parallel publishers on an older warehouse: creating duplicate_groups waits for the advisory lock."""
    _, url = schema_url
    create_old_warehouse(url, OLD_TABLES["before-matchers"])
    holder = sa.create_engine(url)
    engine = sa.create_engine(url)
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            ensure_schema(engine)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    def has_groups() -> bool:
        with holder.connect() as conn:
            return bool(sa.inspect(conn).has_table("duplicate_groups"))

    try:
        with holder.connect() as locked:
            locked.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": 0x505353_5748})
            worker = threading.Thread(target=ensure)
            worker.start()
            worker.join(1.0)
            blocked = worker.is_alive() and not has_groups()
            locked.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": 0x505353_5748})
            locked.commit()
        worker.join(30)
        created = has_groups()
    finally:
        engine.dispose()
        holder.dispose()
    assert not errors, errors
    assert blocked, "ensure_schema created duplicate_groups without waiting for the schema lock"
    assert not worker.is_alive() and created


def _waiting_for_advisory_locks(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").scalar_one())
    finally:
        engine.dispose()


class _PausedPublish:
    """A publish in a thread that stops after its first batch, its transaction open, until resumed."""

    def __init__(self, url: str, categories: list[str], first: list[Any], rest: list[Any]) -> None:
        self.written, self.resume = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []

        def batches() -> Iterator[pa.RecordBatch]:
            yield make_batch(first)
            self.written.set()
            assert self.resume.wait(60), "never resumed"
            if rest:
                yield make_batch(rest)

        def run() -> None:
            try:
                publish_similar_items(url, application=APP, snapshot_date=DAY, categories=categories, batches=batches())
            except BaseException as exc:  # surfaced in the main thread
                self.errors.append(exc)
                self.written.set()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.written.wait(60), "the publish never wrote its first batch"
        assert not self.errors, self.errors

    def finish(self) -> None:
        self.resume.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


def _wait_until(check: Any, what: str) -> None:
    for _ in range(600):
        if check():
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def test_two_publishes_of_the_same_category_at_once_end_with_the_last_ones_rows_and_no_error(schema_url: tuple[str, str]) -> None:
    """Before the slice lock, the second publish always died with UniqueViolation on COPY similar_items."""
    _, url = schema_url
    publish(url, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    first_rows = [("headphones", f"B1{q:08d}", "B0863TXGM3", 1, 0.7) for q in range(6)]
    second_rows = [("headphones", f"B2{q:08d}", "B0756CYWWD", 1, 0.6) for q in range(4)]
    first = _PausedPublish(url, ["headphones"], first_rows[:3], first_rows[3:])
    second_done = threading.Event()
    second_errors: list[BaseException] = []

    def run_second() -> None:
        try:
            publish(url, ["headphones"], make_batch(second_rows))
        except BaseException as exc:  # surfaced in the main thread
            second_errors.append(exc)
        finally:
            second_done.set()

    second = threading.Thread(target=run_second)
    second.start()
    try:
        # The second publish waits for the first's slice lock instead of racing it to the primary key.
        _wait_until(lambda: _waiting_for_advisory_locks(url) == 1, "the second publish waits on the slice lock")
        assert not second_done.is_set()
        assert read_rows(url) == expected(HEADPHONES + CHARGERS)  # readers still see the old rows
    finally:
        first.finish()
        second.join(60)
    assert not second.is_alive() and not second_errors, second_errors
    # The last publish wins; the other category is untouched; no duplicate keys.
    assert read_rows(url) == expected(second_rows + CHARGERS)


def test_publishes_of_different_categories_do_not_wait_for_each_other(schema_url: tuple[str, str]) -> None:
    _, url = schema_url
    publish(url, ["headphones", "chargers"], make_batch(HEADPHONES + CHARGERS))
    paused = _PausedPublish(url, ["headphones"], HEADPHONES[:1], HEADPHONES[1:])
    try:
        publish(url, ["chargers"], make_batch(CHARGERS[:1]))  # returns while the headphones publish is open
    finally:
        paused.finish()
    assert read_rows(url) == expected(HEADPHONES + CHARGERS[:1])


def test_a_publish_of_many_categories_locks_the_date_and_waits_for_a_one_category_publish(schema_url: tuple[str, str]) -> None:
    """Beyond PG_CATEGORY_LOCKS_MAX categories one date lock stands in for per-category locks, and still excludes them."""
    from pss_ops.warehouse.connection import PG_CATEGORY_LOCKS_MAX

    _, url = schema_url
    many = [f"category-{i:03d}" for i in range(PG_CATEGORY_LOCKS_MAX + 1)]
    wide_rows = [(c, "B0863TXGM3", "B0756CYWWD", 1, 0.5) for c in many]
    paused = _PausedPublish(url, ["category-007"], [("category-007", "B0000000001", "B0000000002", 1, 0.9)], [])
    done = threading.Event()
    errors: list[BaseException] = []

    def run_wide() -> None:
        try:
            publish(url, many, make_batch(wide_rows))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            done.set()

    wide = threading.Thread(target=run_wide)
    wide.start()
    try:
        _wait_until(lambda: _waiting_for_advisory_locks(url) == 1, "the wide publish waits on the date lock")
        assert not done.is_set()
    finally:
        paused.finish()
        wide.join(60)
    assert not wide.is_alive() and not errors, errors
    assert read_rows(url) == expected(wide_rows)
