"""Publish similar-item results to the warehouse table in one transaction (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime
import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from pss_ops.warehouse.schema import (
    DIALECTS,
    TABLE_NAME,
    VIEW_NAME,
    column_names,
    columns,
    sa_table,
    secondary_indexes,
    statements,
    table_ddl,
    view_ddl,
)

log = logging.getLogger(__name__)

SIMILAR_ITEMS_COLUMNS = column_names()
# Arbitrary fixed key: every PSS publisher takes the same advisory lock while creating the schema.
_SCHEMA_LOCK_KEY = 0x505353_5748  # "PSS" "WH"
_COPY_SQL = f"COPY {TABLE_NAME} ({', '.join(SIMILAR_ITEMS_COLUMNS)}) FROM STDIN"
_INSERT_SQL = f"INSERT INTO {TABLE_NAME} ({', '.join(SIMILAR_ITEMS_COLUMNS)}) VALUES ({', '.join('?' * len(SIMILAR_ITEMS_COLUMNS))})"
SQLITE_CACHE_KIB = 256 << 10
# A publish of at least this many rows, and at least 1/SQLITE_REINDEX_RATIO of the rows kept, rebuilds the
# SQLite secondary indexes instead of inserting into them (measured: 25 s vs 12 s for 1M rows).
SQLITE_REINDEX_MIN_ROWS = 100_000
SQLITE_REINDEX_RATIO = 3


@dataclass(frozen=True)
class PublishStats:
    """What one publish_similar_items call did."""

    table: str
    rows_deleted: int
    categories: tuple[str, ...]
    seconds: float


def default_warehouse_url(out_dir: str) -> str:
    """SQLite URL of warehouse.sqlite inside a local output directory."""
    if "://" in out_dir:
        raise ValueError(f"default warehouse needs a local output directory, got {out_dir!r}; set the warehouse URL explicitly")
    return f"sqlite:///{Path(out_dir).expanduser().resolve() / 'warehouse.sqlite'}"


def redact_url(url: str) -> str:
    """The URL with its password (user info or ?password=) hidden, safe for logs and run summaries."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def ensure_schema(engine: sa.Engine) -> None:
    """Create the similar_items table, its index and the latest-snapshot view if missing."""
    dialect = engine.dialect.name
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported warehouse dialect {dialect!r}; expected one of {DIALECTS}")
    script = [*statements(table_ddl()), view_ddl(dialect)]
    with engine.begin() as conn:
        if dialect == "postgresql":
            # CREATE ... IF NOT EXISTS is not race-free when parallel publishers start on an empty schema.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        inspector = sa.inspect(conn)
        if inspector.has_table(TABLE_NAME) and inspector.has_table(VIEW_NAME):
            # Re-running the DDL would lock (CREATE INDEX takes SHARE, CREATE OR REPLACE VIEW ACCESS EXCLUSIVE)
            # and queue behind open publishes and long readers, so an existing schema is left alone, unless
            # it predates columns the DDL has added since (nullable, so old rows stay valid).
            present = {c["name"] for c in inspector.get_columns(TABLE_NAME)}
            added = [c for c in columns() if c.name not in present]
            for column in added:
                if not column.nullable:
                    raise ValueError(f"warehouse table {TABLE_NAME} lacks the NOT NULL column {column.name}; migrate it by hand")
                conn.exec_driver_sql(f"ALTER TABLE {TABLE_NAME} ADD COLUMN {column.name} {column.sql_type}")
            if added:
                # PostgreSQL expands the view's * when it is created: recreate it to show the new columns.
                conn.exec_driver_sql(view_ddl(dialect))
                log.info("added columns %s to %s", [c.name for c in added], TABLE_NAME)
            return
        for statement in script:
            conn.exec_driver_sql(statement)
    log.info("ensured warehouse schema (%s, %s) on %s", TABLE_NAME, VIEW_NAME, dialect)


def _checked_rows(
    batch: pa.RecordBatch | pa.Table,
    application: str,
    snapshot_date: datetime.date,
    categories: frozenset[str],
) -> list[tuple[Any, ...]]:
    """Rows of one batch in SIMILAR_ITEMS_COLUMNS order, each verified to belong to this publish."""
    rows: list[tuple[Any, ...]] = []
    for values in zip(*(batch.column(name).to_pylist() for name in SIMILAR_ITEMS_COLUMNS)):
        row = list(values)
        if isinstance(row[1], str):
            try:
                row[1] = datetime.date.fromisoformat(row[1])
            except ValueError:
                pass  # left as a string, so the snapshot_date check below reports it
        checks = (
            ("application", row[0] == application),
            ("snapshot_date", type(row[1]) is datetime.date and row[1] == snapshot_date),
            ("category", row[2] in categories),
        )
        for column, ok in checks:
            if not ok:
                value = values[SIMILAR_ITEMS_COLUMNS.index(column)]
                raise ValueError(
                    f"{column}={value!r} is outside this publish (application={application!r}, "
                    f"snapshot_date={snapshot_date.isoformat()}, categories={sorted(categories)}); "
                    f"row: {dict(zip(SIMILAR_ITEMS_COLUMNS, values))}"
                )
        rows.append(tuple(row))
    return rows


def _fast_rows(
    batch: pa.RecordBatch | pa.Table,
    application: str,
    snapshot_date: datetime.date,
    categories: frozenset[str],
    day_value: Any,
) -> Iterator[tuple[Any, ...]] | None:
    """The batch's rows (snapshot_date as day_value) when column-wise checks prove they belong here; else None."""
    day = batch.column("snapshot_date")
    if pa.types.is_date32(day.type):
        same_day = pc.equal(day, pa.scalar(snapshot_date, pa.date32()))
    elif pa.types.is_string(day.type) or pa.types.is_large_string(day.type):
        same_day = pc.equal(day, snapshot_date.isoformat())
    else:
        return None
    ok = pc.and_kleene(
        pc.and_kleene(pc.equal(batch.column("application"), application), same_day),
        pc.is_in(batch.column("category"), value_set=pa.array(sorted(categories), pa.string())),
    )
    if batch.num_rows and not pc.all(pc.fill_null(ok, False)).as_py():
        return None
    columns = [batch.column(name).to_pylist() if name != "snapshot_date" else None for name in SIMILAR_ITEMS_COLUMNS]
    columns[1] = itertools.repeat(day_value, batch.num_rows)
    return zip(*columns)


def _with_nulls(batch: pa.RecordBatch | pa.Table, names: list[str]) -> pa.RecordBatch | pa.Table:
    for name in names:
        batch = batch.append_column(name, pa.nulls(batch.num_rows, pa.string()))
    return batch


def _rows(
    batch: pa.RecordBatch | pa.Table,
    application: str,
    snapshot_date: datetime.date,
    categories: frozenset[str],
    dialect: str,
) -> tuple[Iterable[tuple[Any, ...]], int]:
    """Rows to insert and their count; a batch failing the column-wise check is re-checked row by row to name the row."""
    # A nullable column a batch lacks (files written before it existed) is published as NULL.
    optional = [c.name for c in columns() if c.nullable and c.name not in batch.schema.names]
    batch = _with_nulls(batch, optional)
    missing = [name for name in SIMILAR_ITEMS_COLUMNS if name not in batch.schema.names]
    if missing:
        raise ValueError(f"batch is missing column(s) {', '.join(missing)}; expected {', '.join(SIMILAR_ITEMS_COLUMNS)}")
    # SQLAlchemy stores a SQLite DATE as ISO text; the rows bypass it, so they carry that text.
    day_value = snapshot_date.isoformat() if dialect == "sqlite" else snapshot_date
    fast = _fast_rows(batch, application, snapshot_date, categories, day_value)
    if fast is not None:
        return fast, batch.num_rows
    rows = [(r[0], day_value, *r[2:]) for r in _checked_rows(batch, application, snapshot_date, categories)]
    return rows, len(rows)


def _write_rows(conn: sa.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    driver_conn = conn.connection.driver_connection
    assert driver_conn is not None, "a live SQLAlchemy connection always has a DBAPI connection"
    # Same session as the SQLAlchemy connection, hence inside the transaction that ran the DELETE.
    if conn.dialect.name == "postgresql":
        with driver_conn.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        # Plain executemany: SQLAlchemy's per-row parameter compilation cost more than the insert.
        driver_conn.executemany(_INSERT_SQL, rows)


def _rebuild_indexes_after(conn: sa.Connection, expected_rows: int | None) -> list[tuple[str, str]]:
    """On SQLite, drop the secondary indexes when a large publish outweighs the rows already kept.

    Inserting into the candidate index in random order costs several times more than building it
    sorted, once the publish is a good share of the table. DDL is transactional in SQLite, so
    readers see the old table and index until the commit, and a failure restores both.
    """
    if conn.dialect.name != "sqlite" or expected_rows is None or expected_rows < SQLITE_REINDEX_MIN_ROWS:
        return []
    kept = conn.execute(sa.select(sa.func.count()).select_from(sa_table())).scalar_one()
    if kept > SQLITE_REINDEX_RATIO * expected_rows:
        return []
    indexes = secondary_indexes()
    for name, _ in indexes:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    return indexes


def publish_similar_items(
    url: str,
    *,
    application: str,
    snapshot_date: datetime.date,
    categories: Sequence[str],
    batches: Iterable[pa.RecordBatch | pa.Table],
    expected_rows: int | None = None,
) -> PublishStats:
    """Atomically replace the (application, snapshot_date, categories) slice of similar_items with batches.

    expected_rows (how many rows the batches hold, when known) lets SQLite bulk-load a large publish.
    """
    if isinstance(categories, str) or not categories:
        raise ValueError(f"categories must be a non-empty sequence of category names, got {categories!r}")
    if type(snapshot_date) is not datetime.date:
        raise ValueError(f"snapshot_date must be a datetime.date, got {snapshot_date!r}")
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise ValueError(f"PostgreSQL warehouse URLs must use the psycopg driver (postgresql+psycopg://), got {redact_url(url)}")
    wanted = tuple(dict.fromkeys(categories))
    started = time.perf_counter()
    engine = sa.create_engine(parsed)
    table = sa_table()
    try:
        ensure_schema(engine)
        inserted, allowed = 0, frozenset(wanted)
        with engine.begin() as conn:
            deleted = conn.execute(
                sa.delete(table).where(
                    table.c.application == application,
                    table.c.snapshot_date == snapshot_date,
                    table.c.category.in_(wanted),
                )
            ).rowcount
            if conn.dialect.name == "sqlite":
                # A bigger page cache keeps the B-tree inserts of a large publish off the disk until commit.
                conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            rebuild = _rebuild_indexes_after(conn, expected_rows)
            for batch in batches:
                rows, count = _rows(batch, application, snapshot_date, allowed, conn.dialect.name)
                _write_rows(conn, rows)
                inserted += count
            for _, create in rebuild:
                conn.exec_driver_sql(create)
    finally:
        engine.dispose()
    stats = PublishStats(TABLE_NAME, deleted, wanted, time.perf_counter() - started)
    log.info(
        "published %s: application=%s snapshot_date=%s categories=%s deleted=%d inserted=%d in %.2fs to %s",
        TABLE_NAME,
        application,
        snapshot_date.isoformat(),
        ",".join(wanted),
        deleted,
        inserted,
        stats.seconds,
        redact_url(url),
    )
    return stats
