"""Publish similar-item results to the warehouse table in one transaction (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime
import importlib.resources
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

log = logging.getLogger(__name__)

SIMILAR_ITEMS_COLUMNS = (
    "application",
    "snapshot_date",
    "category",
    "query_item_id",
    "candidate_item_id",
    "rank",
    "score",
    "run_id",
)

TABLE_NAME = "similar_items"
VIEW_NAME = "similar_items_latest"
_VIEW_DIALECTS = ("postgresql", "sqlite")
# Arbitrary fixed key: every PSS publisher takes the same advisory lock while creating the schema.
_SCHEMA_LOCK_KEY = 0x505353_5748  # "PSS" "WH"

# Mirrors sql/similar_items.sql; used only to build DELETE/INSERT statements, never to create the table.
_TABLE = sa.Table(
    TABLE_NAME,
    sa.MetaData(),
    sa.Column("application", sa.Text, primary_key=True),
    sa.Column("snapshot_date", sa.Date, primary_key=True),
    sa.Column("category", sa.Text, primary_key=True),
    sa.Column("query_item_id", sa.Text, primary_key=True),
    sa.Column("candidate_item_id", sa.Text, nullable=False),
    sa.Column("rank", sa.Integer, primary_key=True),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)
_COPY_SQL = f"COPY {TABLE_NAME} ({', '.join(SIMILAR_ITEMS_COLUMNS)}) FROM STDIN"


@dataclass(frozen=True)
class PublishStats:
    """What one publish_similar_items call did."""

    table: str
    rows_deleted: int
    rows_inserted: int
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


def _read_sql(*parts: str) -> str:
    resource = importlib.resources.files("pss_ops") / "sql"
    for part in parts:
        resource = resource / part
    return resource.read_text(encoding="utf-8")


def _statements(script: str) -> list[str]:
    # The DDL files hold no string literals, so dropping "--" comments before splitting on ";" is safe.
    uncommented = re.sub(r"--[^\n]*", "", script)
    return [stmt.strip() for stmt in uncommented.split(";") if stmt.strip()]


def ensure_schema(engine: sa.Engine) -> None:
    """Create the similar_items table, its index and the latest-snapshot view if missing."""
    dialect = engine.dialect.name
    if dialect not in _VIEW_DIALECTS:
        raise ValueError(f"unsupported warehouse dialect {dialect!r}; expected one of {_VIEW_DIALECTS}")
    script = _read_sql("similar_items.sql") + ";\n" + _read_sql("views", f"{VIEW_NAME}.{dialect}.sql")
    with engine.begin() as conn:
        if dialect == "postgresql":
            # CREATE ... IF NOT EXISTS is not race-free when parallel publishers start on an empty schema.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        inspector = sa.inspect(conn)
        if inspector.has_table(TABLE_NAME) and inspector.has_table(VIEW_NAME):
            # Re-running the DDL would lock (CREATE INDEX takes SHARE, CREATE OR REPLACE VIEW ACCESS EXCLUSIVE)
            # and queue behind open publishes and long readers, so an existing schema is left alone.
            return
        for statement in _statements(script):
            conn.exec_driver_sql(statement)
    log.info("ensured warehouse schema (%s, %s) on %s", TABLE_NAME, VIEW_NAME, dialect)


def _checked_rows(
    batch: pa.RecordBatch | pa.Table,
    application: str,
    snapshot_date: datetime.date,
    categories: frozenset[str],
) -> list[tuple[Any, ...]]:
    """Rows of one batch in SIMILAR_ITEMS_COLUMNS order, each verified to belong to this publish."""
    missing = [name for name in SIMILAR_ITEMS_COLUMNS if name not in batch.schema.names]
    if missing:
        raise ValueError(f"batch is missing column(s) {', '.join(missing)}; expected {', '.join(SIMILAR_ITEMS_COLUMNS)}")
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


def _write_rows(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # Same session as the SQLAlchemy connection, hence inside the transaction that ran the DELETE.
        driver_conn = conn.connection.driver_connection
        assert driver_conn is not None, "a live SQLAlchemy connection always has a DBAPI connection"
        with driver_conn.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        conn.execute(sa.insert(_TABLE), [dict(zip(SIMILAR_ITEMS_COLUMNS, row)) for row in rows])


def publish_similar_items(
    url: str,
    *,
    application: str,
    snapshot_date: datetime.date,
    categories: Sequence[str],
    batches: Iterable[pa.RecordBatch | pa.Table],
) -> PublishStats:
    """Atomically replace the (application, snapshot_date, categories) slice of similar_items with batches."""
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
    try:
        ensure_schema(engine)
        inserted, allowed = 0, frozenset(wanted)
        with engine.begin() as conn:
            deleted = conn.execute(
                sa.delete(_TABLE).where(
                    _TABLE.c.application == application,
                    _TABLE.c.snapshot_date == snapshot_date,
                    _TABLE.c.category.in_(wanted),
                )
            ).rowcount
            for batch in batches:
                rows = _checked_rows(batch, application, snapshot_date, allowed)
                _write_rows(conn, rows)
                inserted += len(rows)
    finally:
        engine.dispose()
    stats = PublishStats(TABLE_NAME, deleted, inserted, wanted, time.perf_counter() - started)
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
