"""The plan step streams the catalog: many small batches give the same partitions and rejects as one batch."""

from __future__ import annotations

import csv
import datetime as dt
import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pss_ops import layout, storage
from pss_ops.catalog import partition as scope_partitions
from pss_ops.catalog import rejects as rejects_file
from pss_ops.catalog import source as catalog_source
from pss_ops.catalog import validate as catalog
from pss_ops.catalog.vectors import OK, parse_vectors, problems, python_vector
from pss_ops.config import AppConfig, parse_config
from pss_ops.manifests import CatalogPlan
from pss_ops.steps.plan import make_context, plan

CATALOG_CSV = Path(__file__).resolve().parents[3] / "data" / "amazon_google" / "catalog.csv"
N_ROWS = 300
DIM = 4
SMALL_BATCH = 16
PARTITION_SIZE = 40
CATEGORIES = ("software", "games", "")  # "" takes the default category


def make_config(**overrides: Any) -> AppConfig:
    data: dict[str, Any] = {
        "application": "streaming_test",
        "features": [{"type": "precomputed", "column": "image_vector", "dim": DIM}],
        "post_filter": {"different": ["seller"]},
        "catalog": {"partition_size": PARTITION_SIZE, "max_reject_fraction": 0.2},
    }
    data.update(overrides)
    return parse_config(data)


# (0-based row, column, corrupt value, reason kind); rows sit in batches after the first on purpose.
CORRUPTIONS = [
    (37, "title", "  ", "empty title"),
    (101, "image_vector", "[0.1, 0.2]", "wrong vector length"),
    (150, "item_id", "", "empty item_id"),
    (203, "image_vector", "[0, 0, 0, 0]", "zero vector"),
    (254, "image_vector", "[0.1, NaN, 0.3, 0.4]", "non-finite vector"),
    (277, "image_vector", "[[0.1, 0.2], [0.3, 0.4]]", "bad vector"),
]
DUPLICATE_OF = (5, 290)  # row 290 repeats row 5's id: found 18 batches later


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """300 real rows, three interleaved categories, 4-d vectors as JSON text, and bad rows in later batches."""
    rows = pd.read_csv(CATALOG_CSV, dtype=str, keep_default_na=False, nrows=N_ROWS)
    rng = np.random.default_rng(11)
    rows.insert(2, "category", [CATEGORIES[i % 3] if i % 7 else CATEGORIES[(i // 7) % 3] for i in range(N_ROWS)])
    rows["image_vector"] = [json.dumps(v.tolist()) for v in rng.normal(size=(N_ROWS, DIM)).round(4)]
    for index, column, value, _ in CORRUPTIONS:
        rows.loc[index, column] = value
    rows.loc[DUPLICATE_OF[1], "item_id"] = rows.loc[DUPLICATE_OF[0], "item_id"]
    return rows


def write_catalog(frame: pd.DataFrame, directory: Path, kind: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        path = directory / "catalog.csv"
        frame.to_csv(path, index=False)
        return str(path)
    # Parquet with a real list<float> column (the corrupt cells that are not JSON lists become NULL or stay odd).
    vectors: list[list[float] | None] = []
    for cell in frame["image_vector"]:
        try:
            parsed = json.loads(cell)
            vectors.append(parsed if all(isinstance(v, (int, float)) for v in parsed) else None)
        except json.JSONDecodeError:
            vectors.append(None)
    table = pa.Table.from_pandas(frame.drop(columns=["image_vector"]), preserve_index=False).append_column(
        "image_vector", pa.array(vectors, pa.list_(pa.float32()))
    )
    path = directory / "catalog.parquet"
    pq.write_table(table, path, row_group_size=50)  # row groups neither equal to nor multiples of the batch size
    return str(path)


def run_plan(uri: str, run_dir: Path, config: AppConfig) -> CatalogPlan:
    ctx = make_context(
        config,
        catalog_uri=uri,
        run_uri=str(run_dir),
        snapshot_date=dt.date(2024, 5, 1),
        run_id="run-stream",
        cache_uri=str(run_dir / "cache.sqlite"),
    )
    return plan(ctx)


def partition_ids(result: CatalogPlan) -> list[tuple[str, str, list[str]]]:
    return [(p.name, p.scope, storage.read_parquet(p.uri, columns=["item_id"]).column("item_id").to_pylist()) for p in result.partitions]


def expected_partitions(frame: pd.DataFrame, rejected_rows: set[int], default: str) -> list[tuple[str, str, list[str]]]:
    """The partitioning rule, independently: scopes sorted, rows in file order, cut every PARTITION_SIZE rows."""
    kept = frame.drop(index=[r - 1 for r in rejected_rows])
    scopes = kept["category"].replace("", default)
    expected = []
    for scope in sorted(set(scopes)):
        ids = kept.loc[scopes == scope, "item_id"].str.strip().tolist()
        for start in range(0, len(ids), PARTITION_SIZE):
            expected.append((f"part-{len(expected):05d}", scope, ids[start : start + PARTITION_SIZE]))
    return expected


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_small_batches_partition_and_reject_like_one_batch(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    config = make_config()
    uri = write_catalog(frame, tmp_path / "input", kind)
    whole = run_plan(uri, tmp_path / "whole", config)

    monkeypatch.setattr(catalog, "BATCH_ROWS", SMALL_BATCH)
    monkeypatch.setattr(catalog_source, "CSV_BLOCK_BYTES", 16 << 10)  # several CSV blocks too
    monkeypatch.setattr(scope_partitions, "PENDING_BYTES", 1)  # every batch spills: partitions come from disk
    streamed = run_plan(uri, tmp_path / "streamed", config)

    rejects_whole = pd.read_csv(whole.rejects_uri, dtype=str, keep_default_na=False)
    rejects_streamed = pd.read_csv(streamed.rejects_uri, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(rejects_streamed, rejects_whole)
    assert streamed.model_dump(exclude={"partitions", "rejects_uri", "seconds"}) == whole.model_dump(
        exclude={"partitions", "rejects_uri", "seconds"}
    )
    assert partition_ids(streamed) == partition_ids(whole)
    for a, b in zip(streamed.partitions, whole.partitions):
        assert storage.read_parquet(a.uri).equals(storage.read_parquet(b.uri))

    # And both are what the rule says: every reject named by its 1-based file row, nothing lost.
    expected_rows = sorted([i + 1 for i, *_ in CORRUPTIONS] + [DUPLICATE_OF[1] + 1])
    assert rejects_streamed["row"].astype(int).tolist() == expected_rows
    kinds = dict(zip(rejects_streamed["row"].astype(int), (r.split(":")[0] for r in rejects_streamed["reason"])))
    for index, column, _, kind_name in CORRUPTIONS:
        if kind == "parquet" and column == "image_vector" and kind_name == "bad vector":
            kind_name = "missing vector"  # a nested list cannot be a list<float> cell; it was written as NULL
        assert kinds[index + 1] == kind_name
    duplicate = rejects_streamed[rejects_streamed["row"].astype(int) == DUPLICATE_OF[1] + 1].iloc[0]
    assert duplicate["reason"] == f"duplicate item_id: {frame.loc[DUPLICATE_OF[0], 'item_id']!r} first seen at row {DUPLICATE_OF[0] + 1}"
    record = json.loads(duplicate["record"])
    assert record["item_id"] == frame.loc[DUPLICATE_OF[1], "item_id"] and record["title"] == frame.loc[DUPLICATE_OF[1], "title"]
    assert streamed.rows_accepted + streamed.rows_rejected == streamed.rows_read == N_ROWS
    assert partition_ids(streamed) == expected_partitions(frame, set(expected_rows), config.catalog.default_category)
    assert all(p.rows <= PARTITION_SIZE for p in streamed.partitions)
    # The scratch space is gone and no partial file is left beside the partitions.
    listing = sorted(q.name for q in Path(streamed.partitions[0].uri).parent.iterdir())
    assert listing == [f"{p.name}.parquet" for p in streamed.partitions]


def test_unused_vector_column_length_is_counted_over_every_batch(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = frame.copy()
    # Length 3 dominates overall, but the first batch holds mostly length 2: a per-batch guess would be wrong.
    rows["behavior_vector"] = [json.dumps([1.0, 2.0] if i < SMALL_BATCH else [1.0, 2.0, float(i)]) for i in range(N_ROWS)]
    monkeypatch.setattr(catalog, "BATCH_ROWS", SMALL_BATCH)
    result = run_plan(write_catalog(rows, tmp_path / "input", "csv"), tmp_path / "run", make_config())
    rejects = pd.read_csv(result.rejects_uri, dtype=str, keep_default_na=False)
    length_rejects = rejects[rejects["reason"].str.contains("behavior_vector")]
    assert length_rejects["row"].astype(int).tolist() == list(range(1, SMALL_BATCH + 1))
    assert set(length_rejects["reason"]) == {"wrong vector length: behavior_vector has 2 values, expected 3"}


def test_unknown_category_fails_after_streaming_and_writes_no_manifest(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "BATCH_ROWS", SMALL_BATCH)
    uri = write_catalog(frame, tmp_path / "input", "csv")
    ctx = make_context(
        make_config(),
        catalog_uri=uri,
        run_uri=str(tmp_path / "run"),
        snapshot_date=dt.date(2024, 5, 1),
        run_id="run-unknown",
        cache_uri=str(tmp_path / "cache.sqlite"),
        categories=("software", "turntables"),
    )
    with pytest.raises(catalog.CatalogError, match="turntables"):
        plan(ctx)
    assert not storage.exists(layout.plan_manifest(ctx.run_uri))
    assert not storage.exists(layout.catalog_partition(ctx.run_uri, "part-00000"))


def test_unreadable_csv_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text('item_id,title\na1,"first"\na2,"second","extra"\n', encoding="utf-8")
    with pytest.raises(catalog.CatalogError, match=rf"{path.name} is not readable CSV.*a2,\"second\",\"extra\""):
        list(catalog.open_catalog(str(path)).batches())


def test_gzip_csv_streams_like_plain(frame: pd.DataFrame, tmp_path: Path) -> None:
    plain = write_catalog(frame, tmp_path / "plain", "csv")
    gz = tmp_path / "catalog.csv.gz"
    frame.to_csv(gz, index=False, compression="gzip")
    a = pa.Table.from_batches(list(catalog.open_catalog(plain).batches(batch_rows=SMALL_BATCH)))
    b = pa.Table.from_batches(list(catalog.open_catalog(str(gz)).batches(batch_rows=SMALL_BATCH)))
    assert a.equals(b) and a.num_rows == N_ROWS
    assert set(a.schema.types) == {pa.string()}  # every CSV cell is text; empty cells are "", not NULL
    assert a.column("description").to_pylist().count("") == (frame["description"] == "").sum()


# --- the vectorised vector checks agree with the per-cell rule ---------------------------------------

ODD_CELLS = [
    "[0.1, 0.2, 0.3, 0.4]",
    " [ 1 ,2,3 , 4 ] ",
    "[1e2, -0.5, 3E-2, 4]",
    "[1., 2, 3, 4]",  # not JSON
    "[+1, 2, 3, 4]",  # not JSON
    "[nan, 1, 2, 3]",  # not JSON (json accepts NaN only)
    "[NaN, 1, 2, 3]",
    "[-Infinity, 1, 2, 3]",
    "[1e400, 1, 2, 3]",  # json reads inf
    "[true, 1, 2, 3]",  # json + numpy accept booleans
    '["1", 2, 3, 4]',  # numpy converts numeric strings
    "[1, 2, 3,]",
    "[]",
    "[0, 0, 0, 0]",
    "[0, -0.0, 0, 0]",
    "[[1, 2], [3, 4]]",
    "1, 2, 3, 4",
    "",
    "   ",
    "[1, 2, 3]",
]


def reference_code(cell: str | None, expected: int, required: bool) -> tuple[int, np.ndarray | None]:
    """The per-cell rule (the pre-streaming validator's), one cell at a time."""
    from pss_ops.catalog import vectors as cv

    if cell is None or not cell.strip():
        return (cv.MISSING if required else OK), None
    try:
        vector = python_vector(cell)
    except (ValueError, TypeError, json.JSONDecodeError):
        return cv.BAD, None
    if len(vector) != expected:
        return cv.WRONG_LENGTH, vector
    if not np.all(np.isfinite(vector)):
        return cv.NON_FINITE, vector
    if not np.any(vector):
        return cv.ZERO, vector
    return OK, vector


@pytest.mark.parametrize("required", [True, False])
def test_text_vectors_match_the_per_cell_rule(required: bool) -> None:
    # Odd cells interleaved with ordinary ones, so the fast and the slow path meet inside one batch.
    rng = np.random.default_rng(3)
    cells: list[str | None] = []
    for odd in [*ODD_CELLS, None]:
        cells.append(json.dumps(rng.normal(size=4).round(3).tolist()))
        cells.append(odd)
    parsed = parse_vectors(pa.array(cells, pa.string()))
    codes = problems(parsed, 4, required)
    arrow = parsed.arrow()
    for i, cell in enumerate(cells):
        code, vector = reference_code(cell, 4, required)
        assert codes[i] == code, (cell, codes[i], code)
        if vector is not None:
            np.testing.assert_array_equal(parsed.values[parsed.offsets[i] : parsed.offsets[i + 1]], vector)
            np.testing.assert_array_equal(np.asarray(arrow[i].as_py(), np.float32), vector.astype(np.float32))


def test_list_vectors_match_the_per_cell_rule() -> None:
    cells = [[0.1, 0.2, 0.3, 0.4], None, [0.0, 0.0, 0.0, 0.0], [1.0, float("nan"), 0.0, 1.0], [1.0, 2.0], [], [1.0, None, 2.0, 3.0]]
    for kind in (pa.list_(pa.float32()), pa.list_(pa.float64()), pa.large_list(pa.float32())):
        array = pa.array(cells, kind).slice(0)  # also through a sliced array's offsets
        codes = problems(parse_vectors(array.slice(1)), 4, True)
        expected = [reference_code(json.dumps(c).replace("null", "NaN") if c is not None else None, 4, True)[0] for c in cells[1:]]
        assert codes.tolist() == expected
    # One width throughout (NULL rows aside) takes the reshaped path; it must agree too.
    uniform = [c for c in cells if c is None or len(c) == 4]
    codes = problems(parse_vectors(pa.array(uniform, pa.list_(pa.float32()))), 4, True)
    expected = [reference_code(json.dumps(c).replace("null", "NaN") if c is not None else None, 4, True)[0] for c in uniform]
    assert codes.tolist() == expected and len(set(expected)) == 4


def test_partitioner_keeps_file_order_per_scope_under_any_budget(tmp_path: Path) -> None:
    schema = pa.schema([("item_id", pa.string()), ("category", pa.string())])
    rng = np.random.default_rng(5)
    scopes = rng.choice(["b", "a", "c"], size=500, p=[0.6, 0.3, 0.1])
    batches = [
        pa.RecordBatch.from_pydict(
            {"item_id": [f"i{j}" for j in range(s, min(s + 37, 500))], "category": scopes[s : s + 37].tolist()}, schema=schema
        )
        for s in range(0, 500, 37)
    ]
    results = []
    for budget in (1, 10_000, 1 << 30):
        directory = tmp_path / f"budget-{budget}"
        directory.mkdir()
        partitioner = scope_partitions.ScopePartitioner(
            str(directory), schema, scope_column="category", partition_size=45, pending_bytes=budget
        )
        for batch in batches:
            partitioner.add(batch)
        written: list[tuple[str, list[str]]] = []
        partitioner.emit(lambda scope, table, out=written: out.append((scope, table.column("item_id").to_pylist())))
        assert not list(directory.iterdir())  # every spill file was consumed
        results.append(written)
    assert results[0] == results[1] == results[2]
    expected = []
    for scope in ("a", "b", "c"):
        ids = [f"i{j}" for j in range(500) if scopes[j] == scope]
        expected.extend((scope, ids[s : s + 45]) for s in range(0, len(ids), 45))
    assert results[0] == expected


def test_rejects_csv_matches_the_frame_writer(tmp_path: Path) -> None:
    rejects = [
        catalog.Reject(3, "", "empty item_id: item_id is empty or NULL", '{"a": "x,\\"y\\"\\nz"}'),
        catalog.Reject(9, "id,9", "r", "{}"),
    ]
    uri = str(tmp_path / "rejects.csv")
    with rejects_file.RejectsWriter(uri) as writer:
        writer.write(rejects)
    expected = pd.DataFrame([(r.row, r.item_id, r.reason, r.record) for r in rejects], columns=list(rejects_file.REJECT_COLUMNS))
    assert Path(uri).read_text(encoding="utf-8") == expected.to_csv(index=False)
    with open(uri, encoding="utf-8", newline="") as handle:
        assert [tuple(r) for r in csv.reader(handle)][1:] == [(str(r.row), r.item_id, r.reason, r.record) for r in rejects]


def test_a_full_disk_while_rejects_are_written_names_the_rejects_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    uri = str(tmp_path / "plan" / "rejects.csv")
    reject = rejects_file.Reject(7, "B000JX5JY6", "empty title: title is empty or NULL", '{"item_id": "B000JX5JY6", "title": ""}')

    class FullDisk:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device") as raised:  # noqa: PT012 - the write is the point
        with rejects_file.RejectsWriter(uri) as writer:
            writer._handle = FullDisk(writer._handle)
            writer._writer = csv.writer(writer._handle, lineterminator="\n")
            writer.write([reject])
    assert raised.value.filename == uri
    assert not list((tmp_path / "plan").iterdir()), "the temporary or a partial rejects.csv was left"
