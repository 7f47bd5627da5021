"""Reaching the warehouse: its URL (parsed, checked, shown without the password), its errors, and publish locks."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_manager
import sqlalchemy as sa

from pss_ops.warehouse.errors import WarehouseError, WarehouseUrlError
from pss_ops.warehouse.schema import DIALECTS

# Up to this many categories a PostgreSQL publish locks each (application, date, category) it replaces, so publishes
# of other categories of the same date proceed in parallel; a larger one locks the whole date (one lock, where
# thousands would exhaust max_locks_per_transaction).
PG_CATEGORY_LOCKS_MAX = 64


def default_warehouse_url(out_dir: str) -> str:
    """SQLite URL of warehouse.sqlite inside a local output directory."""
    if "://" in out_dir:
        raise ValueError(f"default warehouse needs a local output directory, got {out_dir!r}; set the warehouse URL explicitly")
    return f"sqlite:///{Path(out_dir).expanduser().resolve() / 'warehouse.sqlite'}"


def redact_url(url: str) -> str:
    """The URL with its password (user info or ?password=) hidden, safe for logs and run summaries."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that isn't a number
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def engine_url(url: str) -> sa.URL:
    """The parsed warehouse URL; a malformed or unsupported one is a WarehouseError naming it (password hidden)."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as err:
        raise WarehouseUrlError(f"malformed warehouse URL {redact_url(url)}: {err}") from None
    if parsed.get_backend_name() not in DIALECTS:
        raise WarehouseUrlError(f"unsupported warehouse {redact_url(url)}: expected one of {', '.join(DIALECTS)}")
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise WarehouseUrlError(f"PostgreSQL warehouse URLs must use the psycopg driver (postgresql+psycopg://), got {redact_url(url)}")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # An in-memory database would take the published rows with it when the process exits.
        raise WarehouseUrlError(
            f"warehouse {redact_url(url)} is an in-memory SQLite database; give a file: sqlite:///path/warehouse.sqlite"
        )
    return parsed


@contextmanager
def reported(url: str, doing: str) -> Iterator[None]:
    """Database errors (unreachable server, bad credentials, a full disk, a refused value) as one WarehouseError line.

    From SQLAlchemy, or from the ADBC driver a SQLite publish writes through (its own "STATUS: " prefix dropped).
    """
    try:
        yield
    except (sa.exc.SQLAlchemyError, adbc_driver_manager.Error) as err:
        cause = getattr(err, "orig", None) or err
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        if isinstance(cause, adbc_driver_manager.Error):
            first_line = re.sub(r"^[A-Z_]+: (\[SQLite\] )?(failed to execute: )?", "", first_line)
        raise WarehouseError(f"warehouse {redact_url(url)}: {doing} failed: {first_line}") from err


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for a slice; a collision only serialises two unrelated publishes."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_slice(conn: sa.Connection, application: str, snapshot_date: datetime.date, categories: tuple[str, ...]) -> None:
    """Serialise PostgreSQL publishes of the same (application, date, category) until this transaction ends.

    Without it two publishes of one slice both delete (neither sees the other's uncommitted rows), both insert,
    and the second dies on the primary key. With it the second waits, then deletes the first's committed rows
    and inserts its own: the last one wins and neither errors. Always the date lock first, then categories in
    sorted order, so two publishers can't deadlock.
    """
    if conn.dialect.name != "postgresql":
        return  # SQLite takes its one write lock at the first DELETE and holds it to the commit
    day = snapshot_date.isoformat()
    date_key = _lock_key(application, day)
    if len(categories) > PG_CATEGORY_LOCKS_MAX:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": date_key})
        return
    conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": date_key})
    for key in sorted(_lock_key(application, day, category) for category in categories):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
