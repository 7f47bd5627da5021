"""The one shape of each warehouse table: parsed from its DDL file, everything else derived from it.

`sql/<table>.sql` is what users read and what creates the table, so it is the source. The column names,
the SQLAlchemy table the publish's statements are built from, the Arrow/Parquet schema of its rows and
its secondary indexes all come from parsing it here. Every function takes the table's name and defaults
to similar_items, the main result; duplicate_groups (GROUPS_TABLE_NAME) is the other.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_NAME = "similar_items"
GROUPS_TABLE_NAME = "duplicate_groups"
# Every table PSS publishes, in the order the schema is created and each publish writes them.
TABLE_NAMES = (TABLE_NAME, GROUPS_TABLE_NAME)
VIEW_NAME = "similar_items_latest"
DIALECTS = ("postgresql", "sqlite")
# How each view is (re)created: PostgreSQL has no CREATE VIEW IF NOT EXISTS, SQLite no CREATE OR REPLACE VIEW.
_CREATE_VIEW = {"postgresql": "CREATE OR REPLACE VIEW", "sqlite": "CREATE VIEW IF NOT EXISTS"}
# SQL type in the DDL -> (SQLAlchemy type, Arrow type name); the DDL may use no other.
_TYPES = {
    "TEXT": (sa.Text, "string"),
    "DATE": (sa.Date, "date32"),
    "INTEGER": (sa.Integer, "int32"),
    "DOUBLE PRECISION": (sa.Double, "float64"),
}


@dataclass(frozen=True)
class Column:
    """One column as the DDL declares it."""

    name: str
    sql_type: str
    nullable: bool
    primary_key: bool


def read_sql(*parts: str) -> str:
    """A file under the packaged sql/ folder."""
    resource = importlib.resources.files("pss_ops") / "sql"
    for part in parts:
        resource = resource / part
    return resource.read_text(encoding="utf-8")


def statements(script: str) -> list[str]:
    """The statements of a DDL script, comments dropped."""
    # The DDL files hold no string literals, so dropping "--" comments before splitting on ";" is safe.
    uncommented = re.sub(r"--[^\n]*", "", script)
    return [stmt.strip() for stmt in uncommented.split(";") if stmt.strip()]


def table_ddl(table: str = TABLE_NAME) -> str:
    """The CREATE TABLE and CREATE INDEX script of a table."""
    if table not in TABLE_NAMES:
        raise ValueError(f"unknown warehouse table {table!r}; expected one of {TABLE_NAMES}")
    return read_sql(f"{table}.sql")


def view_ddl(dialect: str) -> str:
    """The CREATE VIEW statement of similar_items_latest in a dialect (one SELECT, two ways of creating it)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported warehouse dialect {dialect!r}; expected one of {DIALECTS}")
    (select,) = statements(read_sql("views", f"{VIEW_NAME}.sql"))
    return f"{_CREATE_VIEW[dialect]} {VIEW_NAME} AS\n{select}"


@cache
def columns(table: str = TABLE_NAME) -> tuple[Column, ...]:
    """The table's columns in DDL order, with types, nullability and primary-key membership."""
    create = next(
        (s for s in statements(table_ddl(table)) if re.match(rf"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{table}\b", s, re.I)), None
    )
    if create is None:
        raise ValueError(f"{table}.sql creates no table {table}")
    body = create[create.index("(") + 1 : create.rindex(")")]
    key = re.search(r"PRIMARY\s+KEY\s*\(([^)]*)\)", body, re.I)
    if key is None:
        raise ValueError(f"{table}.sql declares no primary key")
    key_columns = {name.strip() for name in key.group(1).split(",")}
    found = []
    for line in filter(str.strip, re.split(r",\s*\n", body[: key.start()])):
        match = re.fullmatch(r"\s*(\w+)\s+([A-Z ]+?)(\s+NOT\s+NULL)?\s*,?\s*", line, re.I)
        if match is None:
            raise ValueError(f"{table}.sql: cannot read the column declaration {line.strip()!r}")
        name, sql_type = match.group(1), " ".join(match.group(2).upper().split())
        if sql_type not in _TYPES:
            raise ValueError(f"{table}.sql: column {name} has type {sql_type}; supported: {', '.join(_TYPES)}")
        found.append(Column(name, sql_type, nullable=match.group(3) is None, primary_key=name in key_columns))
    return tuple(found)


def column_names(table: str = TABLE_NAME) -> tuple[str, ...]:
    """The table's column names in DDL order: the order of every row PSS writes."""
    return tuple(c.name for c in columns(table))


@cache
def sa_table(table: str = TABLE_NAME) -> sa.Table:
    """The table as SQLAlchemy sees it, to build statements from (the DDL file creates it)."""
    return sa.Table(
        table,
        sa.MetaData(),
        *(sa.Column(c.name, _TYPES[c.sql_type][0], primary_key=c.primary_key, nullable=c.nullable) for c in columns(table)),
    )


@cache
def arrow_schema(table: str = TABLE_NAME) -> pa.Schema:
    """The Parquet/Arrow schema of the table's rows (similar_items: similar_items.parquet, the post-filter's output)."""
    import pyarrow as pa

    # Fields stay nullable, as Arrow builds them: NOT NULL is the warehouse's to enforce, and a cast to a
    # non-nullable field would add nothing but a schema that differs from the arrays written into it.
    return pa.schema([(c.name, getattr(pa, _TYPES[c.sql_type][1])()) for c in columns(table)])


def secondary_indexes(table: str = TABLE_NAME) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the table's secondary indexes, from the DDL."""
    found = []
    for statement in statements(table_ddl(table)):
        match = re.match(r"CREATE\s+INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", statement, re.IGNORECASE)
        if match:
            found.append((match.group(1), statement))
    return found
