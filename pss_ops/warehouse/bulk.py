"""The publish transaction's writer: Arrow tables into a warehouse table, in bulk, on the one connection of the publish.

SQLite gets the ADBC driver's bulk ingest: it binds each Arrow batch to a prepared INSERT in C, where the
sqlite3 module needs a Python tuple per row (measured in bench/warehouse_ingest.py: most of the old publish's
time). The ADBC connection opens its own handle on the file, so the whole SQLite publish, from the DELETE to
the commit, runs on it. PostgreSQL keeps psycopg's COPY on the SQLAlchemy connection, which also holds the
advisory locks: there the server's inserts dominate, and ADBC's COPY saved little (same bench).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa

from pss_ops.warehouse.schema import sa_table

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection as AdbcConnection

# Page cache of a SQLite publish: keeps the B-tree inserts of a large publish off the disk until the commit.
SQLITE_CACHE_KIB = 256 << 10
# How long a SQLite publish waits for another writer's lock, as the sqlite3 module's default timeout does.
SQLITE_BUSY_TIMEOUT_MS = 5_000


class PostgresWriter:
    """A PostgreSQL publish: statements on the SQLAlchemy connection, rows by COPY on its psycopg session."""

    dialect = "postgresql"

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def delete_slice(self, table: str, application: str, snapshot_date: datetime.date, categories: Sequence[str]) -> int:
        """Delete the slice's rows; how many there were."""
        target = sa_table(table)
        return self.conn.execute(
            sa.delete(target).where(
                target.c.application == application,
                target.c.snapshot_date == snapshot_date,
                target.c.category.in_(categories),
            )
        ).rowcount

    def count(self, table: str) -> int:
        return int(self.conn.execute(sa.select(sa.func.count()).select_from(sa_table(table))).scalar_one())

    def execute(self, statement: str) -> None:
        self.conn.exec_driver_sql(statement)

    def insert(self, table: str, rows: pa.Table) -> None:
        """COPY the rows (columns in the table's order) in the session that ran the DELETE, hence in its transaction."""
        driver_conn = self.conn.connection.driver_connection
        assert driver_conn is not None, "a live SQLAlchemy connection always has a DBAPI connection"
        with driver_conn.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(rows.column_names)}) FROM STDIN") as copy:
            for row in zip(*(column.to_pylist() for column in rows.columns)):
                copy.write_row(row)


class SqliteWriter:
    """A SQLite publish on an ADBC connection: statements through its cursor, rows by bulk ingest."""

    dialect = "sqlite"

    def __init__(self, conn: AdbcConnection) -> None:
        self.conn = conn
        self.cursor = conn.cursor()

    def _run(self, statement: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(statement, tuple(parameters) or None)
        return self.cursor.fetchall() if self.cursor.description else []

    def delete_slice(self, table: str, application: str, snapshot_date: datetime.date, categories: Sequence[str]) -> int:
        """Delete the slice's rows; how many there were (SQLite keeps a DATE as ISO text, as SQLAlchemy writes it)."""
        marks = ", ".join("?" * len(categories))
        self._run(
            f"DELETE FROM {table} WHERE application = ? AND snapshot_date = ? AND category IN ({marks})",
            [application, snapshot_date.isoformat(), *categories],
        )
        return int(self._run("SELECT changes()")[0][0])

    def count(self, table: str) -> int:
        return int(self._run(f"SELECT count(*) FROM {table}")[0][0])

    def execute(self, statement: str) -> None:
        self._run(statement)

    def insert(self, table: str, rows: pa.Table) -> None:
        """Append the rows; the driver writes a date32 column as ISO text, like the DELETE above compares it."""
        self.cursor.adbc_ingest(table, rows, mode="append")

    def close(self) -> None:
        self.cursor.close()


@contextmanager
def sqlite_transaction(url: sa.URL) -> Iterator[SqliteWriter]:
    """One transaction on the SQLite file of url, through ADBC: committed when the block ends, rolled back on an error."""
    import adbc_driver_manager
    import adbc_driver_sqlite.dbapi

    assert url.database, "engine_url refuses an in-memory SQLite warehouse"
    conn = adbc_driver_sqlite.dbapi.connect(str(Path(url.database).expanduser()), autocommit=False)
    writer = SqliteWriter(conn)
    try:
        writer.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        writer.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        yield writer
        conn.commit()
    except BaseException:
        # A failed statement may have ended the transaction already (SQLite rolls back on a full disk).
        with suppress(adbc_driver_manager.Error):
            conn.rollback()
        raise
    finally:
        writer.close()
        conn.close()
