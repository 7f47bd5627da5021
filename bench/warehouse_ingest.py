"""Publishing similar_items to a warehouse: the publish's paths and the bulk alternatives, side by side on the same rows.

One synthetic run's rows (the warehouse's Arrow schema, pss_ops/warehouse/schema.py): --rows / 10 query
items x 10 candidates, 16 categories of uneven size, item ids as bench/e2e.py's catalog writes them,
rows ordered by category then query as the post-filter's partitions are, found_by and retriever_scores as
a dense-only run writes them, match_probability NULL (no matcher). Written once to Parquet (not timed);
each variant then streams it in the publish step's batches (steps/publish.py BATCH_ROWS) into an empty
warehouse, in its own process: seconds from the first batch read to the commit (imports excluded), peak
RSS from the kernel's accounting of that process (wait4). Every variant deletes its slice first and commits
once, as a publish does; the rows are counted afterwards (not timed).

  sqlite_pss         publish_similar_items to SQLite, as `pss run` publishes (this checkout's code)
  sqlite_executemany the publish before ADBC: rows as Python tuples, sqlite3 executemany, candidate index
                     dropped and rebuilt in the transaction
  sqlite_adbc_stage  ADBC bulk ingest into a staging table in a separate file, then INSERT ... SELECT
                     into similar_items in the publish's sqlite3 transaction
  postgresql_pss     publish_similar_items to PostgreSQL (psycopg COPY, row by row from Python)
  postgresql_adbc    ADBC PostgreSQL bulk ingest (binary COPY from Arrow) after the DELETE, one transaction
  duckdb             DuckDB, the DDL's table with its primary key, appending each Arrow batch
  duckdb_no_key      DuckDB, the same table without the primary key (no uniqueness check)

CPU s is the variant's own process's CPU over the same span, every thread's (DuckDB runs several): on a shared
machine it tells what the wall time of a single-threaded path would be on a quiet one. For PostgreSQL it is the
client's alone; the server's work shows only in the wall time. PostgreSQL runs in a schema created for the run
and dropped afterwards (--pg-url). Prints a table, then one JSON line; with --out, writes both there too.

    .venv/bin/python bench/warehouse_ingest.py --rows 10000000 --out bench/results/warehouse_ingest.txt
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = (
    "sqlite_pss",
    "sqlite_executemany",
    "sqlite_adbc_stage",
    "postgresql_pss",
    "postgresql_adbc",
    "duckdb",
    "duckdb_no_key",
)
APPLICATION = "e2e_bench"
DAY = dt.date(2026, 11, 20)
RUN_ID = "20261120T000000Z-warehouse"
CATEGORIES = 16
K = 10
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IMPORTS = {"sqlite": ("sqlite3", "adbc_driver_sqlite.dbapi"), "postgresql": ("adbc_driver_postgresql.dbapi",), "duckdb": ("duckdb",)}
TARGET_SECONDS = 40  # for 10M rows: the publish's share of a 4-minute 1M-item run


def write_rows(path: Path, rows: int, seed: int) -> dict[str, int]:
    """The synthetic run's similar_items rows as Parquet; returns the row count per category."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pss_ops.warehouse.schema import arrow_schema

    items = max(1, rows // K)
    rng = np.random.default_rng(seed)
    weights = 1 / np.sqrt(np.arange(1, CATEGORIES + 1))
    category = rng.choice(CATEGORIES, size=items, p=weights / weights.sum())
    order = np.argsort(category, kind="stable")  # by category, then catalog order within it
    members = {c: np.flatnonzero(category == c) for c in range(CATEGORIES)}
    shape = arrow_schema()
    sizes: dict[str, int] = {}
    written = 0
    with pq.ParquetWriter(path, shape) as writer:
        for start in range(0, items, 10_000):
            queries = order[start : start + 10_000]
            per_query = min(K, rows - written) if start + 10_000 >= items else K
            n = len(queries) * per_query
            query = np.repeat(queries, per_query)
            cats = category[query]
            # Candidates from the query's own category, as scope "category" searches.
            candidate = np.empty(n, dtype=np.int64)
            for c in np.unique(cats):
                at = cats == c
                candidate[at] = members[c][rng.integers(0, len(members[c]), int(at.sum()))]
                sizes[f"cat-{c:02d}"] = sizes.get(f"cat-{c:02d}", 0) + int(at.sum())
            score = np.sort(rng.random((len(queries), per_query)), axis=1)[:, ::-1].reshape(-1)
            names = [f"cat-{c:02d}" for c in cats]
            writer.write_table(
                pa.table(
                    {
                        "application": pa.array([APPLICATION] * n),
                        "snapshot_date": pa.array([DAY] * n, pa.date32()),
                        "category": pa.array(names),
                        "query_item_id": pa.array([f"item-{i:08d}" for i in query]),
                        "candidate_item_id": pa.array([f"item-{i:08d}" for i in candidate]),
                        "rank": pa.array(np.tile(np.arange(1, per_query + 1, dtype=np.int32), len(queries))),
                        "score": pa.array(score),
                        "run_id": pa.array([RUN_ID] * n),
                        "found_by": pa.array(["dense"] * n),
                        "retriever_scores": pa.array([f'{{"dense": {s:.6f}}}' for s in score]),
                        "match_probability": pa.nulls(n, pa.float64()),
                    }
                ).cast(shape)
            )
            written += n
    return dict(sorted(sizes.items()))


# --- the variants, each run in its own process ------------------------------------------------------------


def _batches(parquet: Path) -> Iterator[Any]:
    """The rows in the publish step's batches, read as it reads the filtered partitions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pss_ops.steps.publish import BATCH_ROWS

    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=BATCH_ROWS):
        yield pa.Table.from_batches([batch])


def _sqlite_schema(db: Path) -> None:
    import sqlalchemy as sa

    from pss_ops.warehouse.publish import ensure_schema

    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()


def _replace_slice(conn: sqlite3.Connection, categories: list[str], insert: Callable[[sqlite3.Connection], object]) -> None:
    """One transaction on a plain sqlite3 connection, as the publish before ADBC made it: delete the slice, drop the
    secondary indexes, insert, rebuild them, commit. The connection is closed."""
    from pss_ops.warehouse.schema import secondary_indexes

    try:
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        marks = ", ".join("?" * len(categories))
        conn.execute(
            f"DELETE FROM similar_items WHERE application = ? AND snapshot_date = ? AND category IN ({marks})",
            [APPLICATION, DAY.isoformat(), *categories],
        )
        for name, _ in secondary_indexes():
            conn.execute(f"DROP INDEX {name}")
        insert(conn)
        for _, create in secondary_indexes():
            conn.execute(create)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _sqlite_executemany(db: Path, parquet: Path, categories: list[str]) -> None:
    """The publish before ADBC (commit 274917c), minus its row checks: Python tuples into sqlite3's executemany."""
    from pss_ops.warehouse.schema import column_names

    names = column_names()
    insert = f"INSERT INTO similar_items ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    day = DAY.isoformat()

    def rows(conn: sqlite3.Connection) -> None:
        for batch in _batches(parquet):
            columns = [batch.column(n).to_pylist() if n != "snapshot_date" else [day] * batch.num_rows for n in names]
            conn.executemany(insert, zip(*columns))

    _replace_slice(sqlite3.connect(db, isolation_level=None), categories, rows)


def _sqlite_adbc_stage(db: Path, parquet: Path, categories: list[str]) -> None:
    """ADBC ingest into a staging file (no journal, no index), then INSERT ... SELECT in the publish's sqlite3 transaction."""
    import adbc_driver_sqlite.dbapi

    from pss_ops.warehouse.schema import column_names

    names = ", ".join(column_names())
    staging = db.with_name("staging.sqlite")
    stage = adbc_driver_sqlite.dbapi.connect(str(staging), autocommit=True)
    with stage.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=OFF")
        cursor.execute(f"CREATE TABLE staged ({names})")
        for batch in _batches(parquet):
            cursor.adbc_ingest("staged", batch, mode="append")
    stage.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("ATTACH DATABASE ? AS staging", (str(staging),))
    _replace_slice(conn, categories, lambda c: c.execute(f"INSERT INTO similar_items ({names}) SELECT {names} FROM staging.staged"))
    staging.unlink()


def _postgresql_adbc(url: str, parquet: Path, categories: list[str]) -> None:
    """ADBC PostgreSQL: DELETE, then adbc_ingest (binary COPY) of each batch, one transaction."""
    import adbc_driver_postgresql.dbapi
    import sqlalchemy as sa

    libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = adbc_driver_postgresql.dbapi.connect(libpq, autocommit=False)
    try:
        with conn.cursor() as cursor:
            marks = ", ".join(f"${i}" for i in range(3, 3 + len(categories)))
            cursor.execute(
                f"DELETE FROM similar_items WHERE application = $1 AND snapshot_date = $2 AND category IN ({marks})",
                (APPLICATION, DAY, *categories),
            )
            for batch in _batches(parquet):
                cursor.adbc_ingest("similar_items", batch, mode="append")
        conn.commit()
    finally:
        conn.close()


def _duckdb(path: Path, parquet: Path, categories: list[str], *, key: bool) -> None:
    """DuckDB: the DDL's table (with or without its primary key), DELETE, then each Arrow batch appended."""
    import duckdb

    from pss_ops.warehouse.schema import statements, table_ddl

    create = statements(table_ddl())[0]
    if not key:
        create = re.sub(r",\s*PRIMARY\s+KEY\s*\([^)]*\)", "", create)
    conn = duckdb.connect(str(path))
    try:
        conn.execute(create)
        conn.execute("BEGIN TRANSACTION")
        conn.execute(
            "DELETE FROM similar_items WHERE application = ? AND snapshot_date = ? AND list_contains(?, category)",
            [APPLICATION, DAY, categories],
        )
        for batch in _batches(parquet):
            conn.register("batch", batch)
            conn.execute("INSERT INTO similar_items SELECT * FROM batch")
            conn.unregister("batch")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _count(variant: str, target: str) -> int:
    """Rows in similar_items after the variant ran (not timed)."""
    if variant.startswith("duckdb"):
        import duckdb

        conn = duckdb.connect(target, read_only=True)
        try:
            return int(conn.execute("SELECT count(*) FROM similar_items").fetchone()[0])  # type: ignore[index]
        finally:
            conn.close()
    import sqlalchemy as sa

    engine = sa.create_engine(target)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM similar_items").scalar_one())
    finally:
        engine.dispose()


def _cpu_seconds() -> float:
    """This process's CPU seconds so far, every thread's (DuckDB's included); a PostgreSQL server's are not."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant into an empty warehouse; its seconds and the rows it left."""
    parquet, work = Path(args.parquet), Path(args.workdir)
    categories = json.loads(args.categories)
    variant = args.worker
    db = work / f"{variant}.sqlite"
    if variant.startswith("sqlite"):
        target = f"sqlite:///{db}"
        _sqlite_schema(db)  # the table exists before the publish, as check_warehouse leaves it
    elif variant.startswith("postgresql"):
        target = args.pg_url
    else:
        target = str(work / f"{variant}.duckdb")
    # Modules are imported before the clock starts, for every variant alike.
    import importlib

    for module in ("pyarrow.parquet", "pss_ops.steps.publish", *IMPORTS.get(variant.split("_")[0], ())):
        importlib.import_module(module)
    from pss_ops.warehouse.publish import publish_similar_items

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    if variant in ("sqlite_pss", "postgresql_pss"):
        publish_similar_items(
            target,
            application=APPLICATION,
            snapshot_date=DAY,
            categories=categories,
            batches=_batches(parquet),
            expected_rows=args.rows,
        )
    elif variant == "sqlite_executemany":
        _sqlite_executemany(db, parquet, categories)
    elif variant == "sqlite_adbc_stage":
        _sqlite_adbc_stage(db, parquet, categories)
    elif variant == "postgresql_adbc":
        _postgresql_adbc(target, parquet, categories)
    else:
        _duckdb(Path(target), parquet, categories, key=variant == "duckdb")
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    size = sum(f.stat().st_size for f in work.glob(f"{variant}.*"))
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "rows": _count(variant, target),
        "file_mib": round(size / 2**20, 1) if size else None,
    }


def run_worker(args: argparse.Namespace, variant: str, parquet: Path, work: Path, categories: list[str], pg_url: str) -> dict[str, Any]:
    """One variant in a fresh process: its result, peak RSS (MiB) and the load average before and after."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--rows", str(args.rows)]
    command += ["--parquet", str(parquet), "--workdir", str(work), "--categories", json.dumps(categories), "--pg-url", pg_url]
    load_before = os.getloadavg()[0]
    # Files, not pipes: a worker that logs more than a pipe holds would block before wait4 returns.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        # wait4: this child's own rusage, not the maximum over every child so far (RUSAGE_CHILDREN).
        _, status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise RuntimeError(f"variant {variant} failed ({code}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    result["rows_per_second"] = round(result["rows"] / result["seconds"]) if result["seconds"] else None
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    for path in work.glob(f"{variant}.*"):
        path.unlink()
    print(f"[{variant}] {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def table(rows: int, results: dict[str, dict[str, Any]]) -> str:
    heads = f"{'seconds':>9}{'CPU s':>8}{'rows/s':>10}{'peak RSS MiB':>14}{'file MiB':>10}{'load before/after':>19}"
    lines = [f"{'rows=' + format(rows, ','):<20}{heads}"]
    for variant, r in results.items():
        load = "/".join(f"{x:.2f}" for x in r["load_average"])
        file_mib = "" if r["file_mib"] is None else f"{r['file_mib']:,.0f}"
        cells = (
            f"{r['seconds']:>9.1f}{r['cpu_seconds']:>8.1f}{r['rows_per_second']:>10,}{r['peak_rss_mib']:>14,.0f}{file_mib:>10}{load:>19}"
        )
        lines.append(f"{variant:<20}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="similar_items rows (query items x 10)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server; a schema is created there and dropped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table and the JSON line to this file")
    parser.add_argument("--work-dir", help="keep the rows and warehouses here (default: a temp dir, removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--categories", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")

    import sqlalchemy as sa

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="pss-warehouse-"))
    work.mkdir(parents=True, exist_ok=True)
    schema = f"pss_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(args.pg_url) if any(v.startswith("postgresql") for v in variants) else None
    results: dict[str, dict[str, Any]] = {}
    try:
        parquet = work / "similar_items.parquet"
        started = time.perf_counter()
        sizes = write_rows(parquet, args.rows, args.seed)
        generate_seconds = round(time.perf_counter() - started, 1)
        print(f"[rows] {args.rows:,} rows in {len(sizes)} categories, written in {generate_seconds} s", file=sys.stderr, flush=True)
        if admin is not None:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        pg_url = sa.make_url(args.pg_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        for variant in variants:
            if variant.startswith("postgresql") and admin is not None:
                with admin.begin() as conn:  # each PostgreSQL variant starts from an empty schema
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                    conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
                pg_engine = sa.create_engine(pg_url)
                try:
                    from pss_ops.warehouse.publish import ensure_schema

                    ensure_schema(pg_engine)
                finally:
                    pg_engine.dispose()
            results[variant] = run_worker(args, variant, parquet, work, list(sizes), pg_url)
    finally:
        if admin is not None:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            admin.dispose()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    best = min(results, key=lambda v: results[v]["seconds"])
    payload = {
        "bench": "warehouse_ingest",
        "rows": args.rows,
        "categories": sizes,
        "generate_seconds": generate_seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
        "fastest": best,
        "target": {
            "seconds_for_10m": TARGET_SECONDS,
            # Scaled linearly to 10M rows, so a smaller --rows still says where each variant stands.
            "met": {v: r["seconds"] * 10_000_000 / args.rows <= TARGET_SECONDS for v, r in results.items()},
        },
    }
    when = f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%MZ}, {os.cpu_count()} cores"
    header = f"# .venv/bin/python bench/warehouse_ingest.py --rows {args.rows}   ({when})"
    text = "\n".join([header, table(args.rows, results), json.dumps(payload, sort_keys=True)])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
