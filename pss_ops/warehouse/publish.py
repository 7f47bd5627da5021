"""Publish a run's similar items and duplicate groups to the warehouse in one transaction (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from pss_ops.warehouse.bulk import PostgresWriter, SqliteWriter, sqlite_transaction
from pss_ops.warehouse.connection import (
    engine_url,
    lock_slice,
    redact_url,
    reported,
)
from pss_ops.warehouse.errors import WarehouseError, WarehouseUrlError
from pss_ops.warehouse.schema import (
    DIALECTS,
    GROUPS_TABLE_NAME,
    TABLE_NAME,
    TABLE_NAMES,
    VIEW_NAME,
    arrow_schema,
    column_names,
    columns,
    sa_table,
    secondary_indexes,
    statements,
    table_ddl,
    view_ddl,
)

log = logging.getLogger(__name__)

Writer = PostgresWriter | SqliteWriter

SIMILAR_ITEMS_COLUMNS = column_names(TABLE_NAME)
DUPLICATE_GROUPS_COLUMNS = column_names(GROUPS_TABLE_NAME)
# A publish replaces the rows of one application, snapshot date and set of categories in every table.
SLICE_COLUMNS = ("application", "snapshot_date", "category")
# Arbitrary fixed key: every PSS publisher takes the same advisory lock while creating the schema.
_SCHEMA_LOCK_KEY = 0x505353_5748  # "PSS" "WH"
# A publish of at least this many rows, and at least 1/SQLITE_REINDEX_RATIO of the rows kept, rebuilds the
# SQLite secondary indexes instead of inserting into them (measured: 25 s vs 12 s for 1M rows).
SQLITE_REINDEX_MIN_ROWS = 100_000
SQLITE_REINDEX_RATIO = 3


@dataclass(frozen=True)
class PublishStats:
    """What one publish_similar_items call did: rows replaced in similar_items (table) and in duplicate_groups."""

    table: str
    rows_deleted: int
    categories: tuple[str, ...]
    seconds: float
    rows_inserted: int
    group_rows_deleted: int
    group_rows_inserted: int


def check_warehouse(url: str) -> None:
    """Fail before any compute when the warehouse URL is malformed, the server unreachable or the schema not writable.

    Creates the tables if missing (what the publish would do first), which also proves write permission.
    """
    parsed = engine_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:  # a file: engine_url refuses an in-memory database
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise WarehouseUrlError(f"warehouse {redact_url(url)}: folder {folder} does not exist")
    engine = sa.create_engine(parsed)
    try:
        with reported(url, "connecting and creating the schema"):
            ensure_schema(engine)
    finally:
        engine.dispose()


def holds_run(url: str, *, application: str, snapshot_date: datetime.date, categories: Sequence[str], run_id: str, rows: int) -> bool:
    """Whether a run's publish committed: its rows are in similar_items (a run of no rows: its slice is empty)."""
    table = sa_table(TABLE_NAME)
    engine = sa.create_engine(engine_url(url))
    try:
        with reported(url, "reading"), engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE_NAME):
                return False
            in_slice = (table.c.application == application, table.c.snapshot_date == snapshot_date, table.c.category.in_(categories))
            found = conn.execute(sa.select(sa.func.count()).select_from(table).where(*in_slice, table.c.run_id == run_id)).scalar_one()
            if rows:
                return bool(found)
            return not conn.execute(sa.select(sa.func.count()).select_from(table).where(*in_slice)).scalar_one()
    finally:
        engine.dispose()


def _add_missing_columns(conn: sa.Connection, inspector: sa.Inspector, table: str) -> list[str]:
    """Add the nullable columns the DDL has gained since an existing table was created; old rows read NULL there."""
    present = {c["name"] for c in inspector.get_columns(table)}
    added = [c for c in columns(table) if c.name not in present]
    for column in added:
        if not column.nullable:
            raise ValueError(f"warehouse table {table} lacks the NOT NULL column {column.name}; migrate it by hand")
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column.name} {column.sql_type}")
    if added:
        log.info("added columns %s to %s", [c.name for c in added], table)
    return [c.name for c in added]


def ensure_schema(engine: sa.Engine) -> None:
    """Create the warehouse tables, their indexes and the latest-snapshot view if missing; add columns the DDL gained."""
    dialect = engine.dialect.name
    if dialect not in DIALECTS:
        raise WarehouseError(f"unsupported warehouse dialect {dialect!r}; expected one of {DIALECTS}")
    created = []
    with engine.begin() as conn:
        if dialect == "postgresql":
            # CREATE ... IF NOT EXISTS is not race-free when parallel publishers start on an empty schema.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        inspector = sa.inspect(conn)
        for table in TABLE_NAMES:
            # Re-running the DDL would lock (CREATE INDEX takes SHARE, CREATE OR REPLACE VIEW ACCESS EXCLUSIVE)
            # and queue behind open publishes and long readers, so an existing table is left alone, unless
            # it predates columns the DDL has added since (nullable, so old rows stay valid) or lacks its view.
            exists = inspector.has_table(table)
            view_missing = table == TABLE_NAME and not inspector.has_table(VIEW_NAME)
            added = _add_missing_columns(conn, inspector, table) if exists else []
            if not exists or view_missing:
                for statement in statements(table_ddl(table)):
                    conn.exec_driver_sql(statement)
                created.append(table)
            if table == TABLE_NAME and (not exists or view_missing or added):
                # PostgreSQL expands the view's * when it is created: recreate it to show new columns.
                conn.exec_driver_sql(view_ddl(dialect))
    if created:
        log.info("ensured warehouse schema (%s) on %s", ", ".join(created), dialect)


def _checked_rows(
    batch: pa.RecordBatch | pa.Table,
    names: tuple[str, ...],
    application: str,
    snapshot_date: datetime.date,
    categories: frozenset[str],
) -> None:
    """Verify row by row that each row belongs to this publish; the first that doesn't is a ValueError naming it."""
    at = {name: names.index(name) for name in SLICE_COLUMNS}
    for values in zip(*(batch.column(name).to_pylist() for name in names)):
        day = values[at["snapshot_date"]]
        if isinstance(day, str):
            try:
                day = datetime.date.fromisoformat(day)
            except ValueError:
                pass  # left as a string, so the snapshot_date check below reports it
        checks = (
            ("application", values[at["application"]] == application),
            ("snapshot_date", type(day) is datetime.date and day == snapshot_date),
            ("category", values[at["category"]] in categories),
        )
        for column, ok in checks:
            if not ok:
                raise ValueError(
                    f"{column}={values[at[column]]!r} is outside this publish (application={application!r}, "
                    f"snapshot_date={snapshot_date.isoformat()}, categories={sorted(categories)}); "
                    f"row: {dict(zip(names, values))}"
                )


def _belongs(batch: pa.Table, application: str, snapshot_date: datetime.date, categories: frozenset[str]) -> bool:
    """Whether column-wise checks prove every row of the batch belongs to this publish (False: check row by row)."""
    day = batch.column("snapshot_date")
    if pa.types.is_date32(day.type):
        same_day = pc.equal(day, pa.scalar(snapshot_date, pa.date32()))
    elif pa.types.is_string(day.type) or pa.types.is_large_string(day.type):
        same_day = pc.equal(day, snapshot_date.isoformat())
    else:
        return False
    ok = pc.and_kleene(
        pc.and_kleene(pc.equal(batch.column("application"), application), same_day),
        pc.is_in(batch.column("category"), value_set=pa.array(sorted(categories), pa.string())),
    )
    return not batch.num_rows or bool(pc.all(pc.fill_null(ok, False)).as_py())


def _checked(
    table: str,
    batch: pa.RecordBatch | pa.Table,
    application: str,
    snapshot_date: datetime.date,
    categories: frozenset[str],
) -> pa.Table:
    """The batch in the table's shape (columns in DDL order), each row verified to belong to this publish.

    A batch failing the column-wise check is re-checked row by row, to name the row; snapshot_date, once
    checked, is written as the publish's date whatever its type in the batch (ISO text, date32, date64).
    """
    names = column_names(table)
    batch = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    # A nullable column a batch lacks (files written before it existed, a run without a matcher) is published as NULL.
    shape = arrow_schema(table)
    for column in columns(table):
        if column.nullable and column.name not in batch.schema.names:
            batch = batch.append_column(column.name, pa.nulls(batch.num_rows, shape.field(column.name).type))
    missing = [name for name in names if name not in batch.schema.names]
    if missing:
        raise ValueError(f"{table} batch is missing column(s) {', '.join(missing)}; expected {', '.join(names)}")
    if not _belongs(batch, application, snapshot_date, categories):
        _checked_rows(batch, names, application, snapshot_date, categories)
    day = pa.array([snapshot_date], pa.date32()).take(pa.array([0] * batch.num_rows, pa.int32()))
    arrays = []
    for field in shape:
        values = day if field.name == "snapshot_date" else batch.column(field.name)
        try:
            arrays.append(values.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(f"{table} column {field.name} can't be written as {field.type}: {err}") from None
    return pa.Table.from_arrays(arrays, schema=shape)


def _rebuild_indexes_after(writer: Writer, table: str, expected_rows: int | None) -> list[tuple[str, str]]:
    """On SQLite, drop the table's secondary indexes when a large publish outweighs the rows already kept.

    Inserting into the candidate index in random order costs several times more than building it
    sorted, once the publish is a good share of the table. DDL is transactional in SQLite, so
    readers see the old table and index until the commit, and a failure restores both.
    """
    if writer.dialect != "sqlite" or expected_rows is None or expected_rows < SQLITE_REINDEX_MIN_ROWS:
        return []
    if writer.count(table) > SQLITE_REINDEX_RATIO * expected_rows:
        return []
    indexes = secondary_indexes(table)
    for name, _ in indexes:
        writer.execute(f"DROP INDEX IF EXISTS {name}")
    return indexes


def _replace_slice(
    writer: Writer,
    table: str,
    batches: Iterable[pa.RecordBatch | pa.Table],
    application: str,
    snapshot_date: datetime.date,
    categories: tuple[str, ...],
    expected_rows: int | None = None,
) -> tuple[int, int]:
    """Delete the table's slice and insert the batches' rows in its place, in the writer's transaction: (deleted, inserted)."""
    deleted = writer.delete_slice(table, application, snapshot_date, categories)
    rebuild = _rebuild_indexes_after(writer, table, expected_rows)
    inserted, allowed = 0, frozenset(categories)
    for batch in batches:
        rows = _checked(table, batch, application, snapshot_date, allowed)
        if rows.num_rows:
            writer.insert(table, rows)
        inserted += rows.num_rows
    for _, create in rebuild:
        writer.execute(create)
    return deleted, inserted


@contextmanager
def _transaction(engine: sa.Engine, application: str, snapshot_date: datetime.date, categories: tuple[str, ...]) -> Iterator[Writer]:
    """The publish's one transaction, committed when the block ends: ADBC on SQLite, SQLAlchemy with slice locks on PostgreSQL."""
    if engine.dialect.name == "sqlite":
        with sqlite_transaction(engine.url) as writer:
            yield writer
        return
    with engine.begin() as conn:
        lock_slice(conn, application, snapshot_date, categories)
        yield PostgresWriter(conn)


def publish_similar_items(
    url: str,
    *,
    application: str,
    snapshot_date: datetime.date,
    categories: Sequence[str],
    batches: Iterable[pa.RecordBatch | pa.Table],
    expected_rows: int | None = None,
    group_batches: Iterable[pa.RecordBatch | pa.Table] = (),
    before_commit: Callable[[PublishStats], None] | None = None,
) -> PublishStats:
    """Atomically replace the (application, snapshot_date, categories) slice of similar_items and of duplicate_groups.

    batches hold similar_items rows, group_batches duplicate_groups rows (arrow_schema(GROUPS_TABLE_NAME)).
    No group batches, as from a run without a matcher, leave that slice of duplicate_groups empty. Both
    tables change in one transaction: a failure anywhere leaves both as they were. expected_rows (how many
    rows the batches hold, when known) lets SQLite bulk-load a large publish. before_commit runs with the stats
    once every row is written and before the commit: what it writes can fail the publish and leave the warehouse
    as it was (pss run stages its top-level outputs there).
    """
    if isinstance(categories, str) or not categories:
        raise ValueError(f"categories must be a non-empty sequence of category names, got {categories!r}")
    if type(snapshot_date) is not datetime.date:
        raise ValueError(f"snapshot_date must be a datetime.date, got {snapshot_date!r}")
    for name, given in (("batches", batches), ("group_batches", group_batches)):
        if isinstance(given, pa.Table | pa.RecordBatch):
            raise TypeError(f"{name} must be an iterable of tables or record batches, not one {type(given).__name__}")
    parsed = engine_url(url)
    wanted = tuple(dict.fromkeys(categories))
    started = time.perf_counter()
    engine = sa.create_engine(parsed)
    try:
        with reported(url, "publishing"):
            ensure_schema(engine)
            with _transaction(engine, application, snapshot_date, wanted) as writer:
                deleted, inserted = _replace_slice(writer, TABLE_NAME, batches, application, snapshot_date, wanted, expected_rows)
                group_deleted, group_inserted = _replace_slice(writer, GROUPS_TABLE_NAME, group_batches, application, snapshot_date, wanted)
                stats = PublishStats(
                    table=TABLE_NAME,
                    rows_deleted=deleted,
                    categories=wanted,
                    seconds=time.perf_counter() - started,
                    rows_inserted=inserted,
                    group_rows_deleted=group_deleted,
                    group_rows_inserted=group_inserted,
                )
                if before_commit is not None:
                    before_commit(stats)
    finally:
        engine.dispose()
    log.info(
        "published %s and %s: application=%s snapshot_date=%s categories=%s deleted=%d+%d inserted=%d+%d in %.2fs to %s",
        TABLE_NAME,
        GROUPS_TABLE_NAME,
        application,
        snapshot_date.isoformat(),
        ",".join(wanted),
        deleted,
        group_deleted,
        inserted,
        group_inserted,
        stats.seconds,
        redact_url(url),
    )
    return stats
