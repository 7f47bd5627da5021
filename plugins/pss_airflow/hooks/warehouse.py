"""The warehouse connection as a SQLAlchemy URL for `pss step publish`."""

from __future__ import annotations

from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException


def warehouse_url(conn_id: str) -> str | None:
    """SQLAlchemy URL from an Airflow connection, or None when the connection is not defined.

    Either the connection's extra carries {"sqlalchemy_url": ...}, or a postgres/sqlite
    connection is turned into a psycopg (COPY-capable) or SQLite URL.
    """
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    explicit = conn.extra_dejson.get("sqlalchemy_url")
    if explicit:
        return str(explicit)
    conn_type = (conn.conn_type or "").lower()
    if conn_type in ("postgres", "postgresql"):
        auth = quote(conn.login or "", safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        host = f"{conn.host or 'localhost'}:{conn.port or 5432}"
        return f"postgresql+psycopg://{auth + '@' if auth else ''}{host}/{conn.schema or ''}"
    if conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    raise ValueError(
        f"connection {conn_id!r} of type {conn.conn_type!r} is not a warehouse: use postgres, sqlite, "
        "or set extra {'sqlalchemy_url': ...}"
    )
