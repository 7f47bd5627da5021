"""Bad catalogs through the real `pss run`: each either fails with one line naming file, column and row, or runs
with its bad rows in rejects.csv under their reason kind, absent from similar_items, and every other row published.

The catalogs are 60 real Amazon–Google rows, corrupted as real feeds are; the configs embed without the text
model (character n-grams and digit-bearing tokens), so each run takes about a second.
"""

from __future__ import annotations

import csv
import decimal
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pss_ops import storage
from pss_ops.cli import ARRAY_INDEX_ENV, WAREHOUSE_ENV, main
from pss_ops.config import parse_config
from tests.conftest import ROOT, write_config

CATALOG_CSV = ROOT / "data" / "amazon_google" / "catalog.csv"
N_ROWS = 60
SNAPSHOT = "2024-05-01"

BASE = {
    "application": "bad_inputs",
    "features": [{"type": "char_ngram", "name": "grams", "dims": 256}, {"type": "model_tokens", "name": "numbers", "dims": 256}],
    "k": 5,
    "quality": {"recall_sample": 10},
    "catalog": {"max_reject_fraction": 0.5},
}
CONFIGS: dict[str, dict[str, Any]] = {
    "text": BASE,
    # The lexical retriever alone besides digit tokens: character 3-5-grams, TF-IDF.
    "lexical": {
        **BASE,
        "features": [{"type": "model_tokens", "name": "numbers", "dims": 256}],
        "retrievers": [
            {"type": "dense", "weight": 0.3},
            {"type": "lexical", "name": "tfidf", "analyzer": "char", "ngram_min": 3, "ngram_max": 5},
        ],
    },
    "vectors": {**BASE, "features": [{"type": "char_ngram", "dims": 256}, {"type": "precomputed", "column": "image_vector", "dim": 4}]},
    "reject_all": {**BASE, "catalog": {"max_reject_fraction": 1.0}},
    "strict": {**BASE, "catalog": {"max_reject_fraction": 0.01}},
}


@pytest.fixture(autouse=True)
def _no_ambient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv(ARRAY_INDEX_ENV, raising=False)


@pytest.fixture(scope="module")
def real_rows() -> pd.DataFrame:
    frame = pd.read_csv(CATALOG_CSV, dtype=str, keep_default_na=False, nrows=N_ROWS)
    assert frame["item_id"].is_unique
    return frame


@pytest.fixture(scope="module")
def config_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("configs")
    return {name: write_config(parse_config(data), directory / f"{name}.yaml") for name, data in CONFIGS.items()}


@dataclass
class Catalog:
    """A bad catalog and what `pss run` must make of it."""

    path: str
    config: str = "text"
    args: list[str] = field(default_factory=list)
    # Accepted runs: 1-based row -> the start of its reject reason ("kind: detail"), and each row's published id.
    rejected: dict[int, str] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    # Failed runs: what the one error line must contain (the file, and the column and row where known).
    error: list[str] | None = None


Builder = Callable[[pd.DataFrame, Path], Catalog]
ACCEPTED: dict[str, Builder] = {}
FAILED: dict[str, Builder] = {}


def accepted(builder: Builder) -> Builder:
    ACCEPTED[builder.__name__] = builder
    return builder


def failed(builder: Builder) -> Builder:
    FAILED[builder.__name__] = builder
    return builder


def csv_catalog(rows: pd.DataFrame, directory: Path, rejected: dict[int, str], config: str = "text", name: str = "catalog.csv") -> Catalog:
    path = directory / name
    rows.to_csv(path, index=False, compression="gzip" if name.endswith(".gz") else None)
    return Catalog(str(path), config, rejected=rejected, ids=[str(i).strip() for i in rows["item_id"]])


def with_row(rows: pd.DataFrame, index: int, **values: str) -> pd.DataFrame:
    for column, value in values.items():
        rows.loc[index, column] = value
    return rows


def with_vectors(rows: pd.DataFrame, **cells: str) -> pd.DataFrame:
    """A usable 4-d image_vector on every row; cells maps 0-based rows (as "r12") to a bad cell."""
    rows["image_vector"] = [json.dumps([0.5, -0.25, float(i % 7) + 0.5, 1.0]) for i in range(len(rows))]
    for key, cell in cells.items():
        rows.loc[int(key[1:]), "image_vector"] = cell
    return rows


# --- runs that finish, with the bad rows rejected ---------------------------------------------------


@accepted
def blank_title(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_row(rows, 4, title=""), directory, {5: "empty title: title is empty or NULL"})


@accepted
def whitespace_title(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_row(rows, 9, title=" \t  "), directory, {10: "empty title:"})


@accepted
def zero_width_title(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_row(rows, 11, title="\u200b\ufeff"), directory, {12: "empty title: title '\\u200b\\ufeff' has no visible"})


@accepted
def blank_id(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_row(rows, 13, item_id="  "), directory, {14: "empty item_id: item_id is empty or NULL"})


@accepted
def zero_width_id(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_row(rows, 15, item_id="\u200b"), directory, {16: "empty item_id: item_id '\\u200b' has no visible"})


@accepted
def duplicate_ids(rows: pd.DataFrame, directory: Path) -> Catalog:
    first = rows.loc[2, "item_id"]
    rows = with_row(rows, 40, item_id=f" {first} ")
    return csv_catalog(rows, directory, {41: f"duplicate item_id: {first!r} first seen at row 3"})


@accepted
def nul_in_id(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(rows, 17, item_id="amazon:b0\x0000x")
    path = directory / "catalog.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)
    return Catalog(
        str(path),
        rejected={18: "bad item_id: item_id 'amazon:b0\\x0000x' contains the control character U+0000"},
        ids=list(rows["item_id"]),
    )


@accepted
def control_character_in_category(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows["category"] = "software"
    rows = with_row(rows, 19, category="soft\x1bware")
    return csv_catalog(rows, directory, {20: "bad category: category 'soft\\x1bware' contains the control character U+001B"})


@accepted
def too_short_for_any_feature(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(with_row(rows, 21, title="tv"), 22, title="PC")
    detail = "yields no features: char_ngram 'grams' needs at least 3 characters, model_tokens 'numbers' needs a token with a digit"
    return csv_catalog(rows, directory, {22: f"no features: title 'tv' {detail}", 23: f"no features: title 'PC' {detail}"})


@accepted
def single_characters(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(with_row(rows, 24, title="a"), 25, title="é")
    return csv_catalog(rows, directory, {25: "no features: title 'a'", 26: "no features: title 'é'"})


@accepted
def lexical_retriever_short_title(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(with_row(rows, 26, title="tv"), 27, title="x1")  # "x1": a digit token, so the dense retriever sees it
    return csv_catalog(
        rows,
        directory,
        {
            27: "no features: title 'tv' yields no features: model_tokens 'numbers' needs a token with a digit, "
            "lexical retriever 'tfidf' (char 3-5) needs at least 3 characters"
        },
        config="lexical",
    )


@accepted
def lexical_retriever_invisible_title(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_row(rows, 28, title="\u200b"), directory, {29: "empty title:"}, config="lexical")


@accepted
def wrong_vector_length(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_vectors(rows, r30="[0.1, 0.2, 0.3]")
    return csv_catalog(rows, directory, {31: "wrong vector length: image_vector has 3 values, expected 4"}, config="vectors")


@accepted
def nan_and_inf_vectors(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_vectors(rows, r31="[0.1, NaN, 0.3, 0.4]", r32="[Infinity, 0.2, 0.3, 0.4]", r33="[0.1, 0.2, 1e400, 0.4]")
    expected = {row: "non-finite vector: image_vector contains NaN or inf" for row in (32, 33, 34)}
    return csv_catalog(rows, directory, expected, config="vectors")


@accepted
def json_vectors_that_are_not_lists(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_vectors(rows, r34='{"x": 1}', r35='"0.1, 0.2, 0.3, 0.4"', r36="[[0.1, 0.2], [0.3, 0.4]]", r37="0.5", r38="[0.1, 0.2, 0.3,")
    expected = {row: "bad vector: image_vector is not a list of numbers" for row in range(35, 40)}
    return csv_catalog(rows, directory, expected, config="vectors")


@accepted
def missing_vector(rows: pd.DataFrame, directory: Path) -> Catalog:
    return csv_catalog(with_vectors(rows, r39=""), directory, {40: "missing vector: image_vector is empty"}, config="vectors")


@accepted
def vectors_beyond_float32(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_vectors(rows, r41="[1e39, 0.2, 0.3, 0.4]", r42="[1e20, 1e20, 0.3, 0.4]", r43="[1e-50, 0, 0, 0]")
    expected = {
        42: "vector out of float32 range: column image_vector has 1e+39, beyond ±3.4e+38",
        43: "vector out of float32 range: column image_vector has 1e+20, and its L2 norm overflows float32",
        44: "zero vector: image_vector is all zeros as float32",
    }
    return csv_catalog(rows, directory, expected, config="vectors")


@accepted
def float_ids_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    ids = [float(5000 + i) for i in range(len(rows))]
    ids[44], ids[45] = 12.5, 5.9e20
    table = pa.Table.from_pandas(rows.drop(columns=["item_id"]), preserve_index=False).add_column(0, "item_id", pa.array(ids))
    path = directory / "catalog.parquet"
    pq.write_table(table, path)
    expected = {45: "bad item_id: item_id 12.5 is a float", 46: "bad item_id: item_id 5.9e+20 is a float"}
    return Catalog(str(path), rejected=expected, ids=[str(int(i)) for i in ids])


@accepted
def mixed_types_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    """Ids as integers, prices as decimals, a boolean and a dictionary-encoded column, titles as large strings."""
    ids = list(range(900_001, 900_001 + len(rows)))
    table = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "title": pa.array(rows["title"].tolist(), pa.large_string()),
            "brand": pa.array(rows["brand"].tolist()).dictionary_encode(),
            "price": pa.array([decimal.Decimal("19.99")] * len(rows), pa.decimal128(8, 2)),
            "seller": pa.array(rows["seller"].tolist(), pa.string()),
            "in_stock": pa.array([i % 3 != 0 for i in range(len(rows))]),
            "weight_kg": pa.array([0.1 * i for i in range(len(rows))], pa.float64()),
        }
    )
    path = directory / "catalog.parquet"
    pq.write_table(table, path)
    return Catalog(str(path), ids=[str(i) for i in ids])


@accepted
def csv_with_bom(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv"
    path.write_bytes(b"\xef\xbb\xbf" + rows.to_csv(index=False).encode())
    return Catalog(str(path), ids=list(rows["item_id"]))


@accepted
def quoted_newline_in_title(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(rows, 47, title='clickart 950 000\npremier image pack, "dvd-rom"')
    return csv_catalog(rows, directory, {})


@accepted
def gzip_with_bad_rows(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(with_row(rows, 48, title=""), 49, title="tv")
    return csv_catalog(rows, directory, {49: "empty title:", 50: "no features:"}, name="catalog.csv.gz")


# --- runs that fail, with one line naming where ----------------------------------------------------


@failed
def empty_file(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv"
    path.write_bytes(b"")
    return Catalog(str(path), error=[f"catalog {path} is not readable CSV", "Empty CSV file"])


@failed
def header_only(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv"
    path.write_text(",".join(rows.columns) + "\n", encoding="utf-8")
    return Catalog(str(path), error=[f"catalog {path} has no rows"])


@failed
def missing_title_column(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv"
    rows.rename(columns={"title": "name"}).to_csv(path, index=False)
    return Catalog(str(path), error=[f"catalog {path} is missing required column(s) 'title'", "found columns: item_id, name"])


@failed
def missing_vector_column(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv"
    rows.to_csv(path, index=False)
    return Catalog(str(path), config="vectors", error=[f"catalog {path} is missing column 'image_vector' required by the config"])


@failed
def unsupported_extension(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.json"
    rows.to_json(path, orient="records")
    return Catalog(str(path), error=[f"catalog {path}: unsupported format; use .csv, .csv.gz or .parquet"])


@failed
def unknown_category(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows["category"] = ["software" if i % 2 else "games" for i in range(len(rows))]
    catalog = csv_catalog(rows, directory, {})
    catalog.args = ["--categories", "software,turntables"]
    catalog.error = [
        "requested categories not found in the catalog",
        "turntables",
        "it has 2 categories with accepted rows: games, software",
    ]
    return catalog


@failed
def duplicate_column_in_csv(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*rows.columns, "brand"])
        writer.writerows([*row, "other brand"] for row in rows.itertuples(index=False))
    return Catalog(str(path), error=[f"catalog {path} has duplicate column name(s) 'brand'"])


@failed
def duplicate_column_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.parquet"
    table = pa.Table.from_pandas(rows, preserve_index=False)
    pq.write_table(pa.table([*table.columns, table.column("title")], names=[*table.column_names, "title"]), path)
    return Catalog(str(path), error=[f"catalog {path} has duplicate column name(s) 'title'"])


@failed
def folder_instead_of_file(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.parquet"
    path.mkdir()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path / "part-0.parquet")
    return Catalog(str(path), error=[f"catalog {path} is a folder"])


@failed
def missing_file(rows: pd.DataFrame, directory: Path) -> Catalog:
    return Catalog(str(directory / "nowhere.csv"), error=[f"catalog {directory / 'nowhere.csv'} not found"])


@failed
def corrupt_parquet_row_group(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=20)
    title = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    for offset in range(title.data_page_offset, title.data_page_offset + 48):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return Catalog(str(path), error=[f"catalog {path} is not readable Parquet: row group 2 of 3 (data rows 21-40)"])


@failed
def corrupt_gzip(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.csv.gz"
    packed = gzip.compress(rows.to_csv(index=False).encode())
    path.write_bytes(packed[:40] + bytes(b ^ 0x5A for b in packed[40:200]) + packed[200:])
    return Catalog(str(path), error=[f"catalog {path} is not readable CSV"])


@failed
def unreadable_s3(rows: pd.DataFrame, directory: Path) -> Catalog:
    return Catalog("s3://no-such-bucket/catalogs/catalog.csv", error=["cannot read catalog s3://no-such-bucket/catalogs/catalog.csv: "])


@failed
def invalid_utf8(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows = with_row(rows, 33, description="made in m\x00rker")
    path = directory / "catalog.csv"
    path.write_bytes(rows.to_csv(index=False).encode().replace(b"m\x00rker", b"m\xe9rker"))
    return Catalog(str(path), error=[f"catalog {path}: row 34, column 'description' is not valid UTF-8 (bytes 0xe9)"])


@failed
def invalid_utf8_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    """A writer that labels bytes as strings without checking them (Parquet does not enforce UTF-8)."""
    titles = [t.encode() for t in rows["title"]]
    titles[51] = titles[51][:4] + b"\xff" + titles[51][4:]
    raw = pa.array(titles, pa.binary())
    path = directory / "catalog.parquet"
    table = pa.Table.from_pandas(rows.drop(columns=["title"]), preserve_index=False)
    pq.write_table(table.add_column(1, "title", pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())), path)
    return Catalog(str(path), error=[f"catalog {path}: row 52, column 'title' is not valid UTF-8 (bytes 0xff)"])


@failed
def list_title_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.parquet"
    titles = pa.array([t.split() for t in rows["title"]], pa.list_(pa.string()))
    pq.write_table(pa.Table.from_pandas(rows.drop(columns=["title"]), preserve_index=False).add_column(1, "title", titles), path)
    return Catalog(str(path), error=[f"catalog {path}: column 'title' has type list<", "string>; it must be text"])


@failed
def struct_attribute_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.parquet"
    dims = pa.array([{"w": 1.0, "h": 2.0}] * len(rows))
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False).append_column("size", dims), path)
    return Catalog(str(path), error=[f"catalog {path}: column 'size' has type struct<w: double, h: double>; it must be text"])


@failed
def binary_ids_in_parquet(rows: pd.DataFrame, directory: Path) -> Catalog:
    path = directory / "catalog.parquet"
    ids = pa.array([i.encode() for i in rows["item_id"]], pa.binary())
    pq.write_table(pa.Table.from_pandas(rows.drop(columns=["item_id"]), preserve_index=False).add_column(0, "item_id", ids), path)
    return Catalog(str(path), error=[f"catalog {path}: column 'item_id' has type binary; it must be text"])


@failed
def every_row_rejected(rows: pd.DataFrame, directory: Path) -> Catalog:
    rows["title"] = ["tv" if i % 2 else "\u200b" for i in range(len(rows))]
    catalog = csv_catalog(rows, directory, {}, config="reject_all")
    catalog.error = [f"catalog {catalog.path}: no row accepted in scope (60 read, 60 rejected, 0 out of scope)", "'no features': 30"]
    return catalog


@failed
def too_many_rejects(rows: pd.DataFrame, directory: Path) -> Catalog:
    for index in (3, 5, 8):
        rows.loc[index, "title"] = "tv"
    catalog = csv_catalog(rows, directory, {}, config="strict")
    catalog.error = [
        f"catalog {catalog.path}: 3 of 60 rows rejected (5.00%)",
        "max_reject_fraction=1.00%",
        "'no features': 3",
        "rejects.csv",
    ]
    return catalog


# --- the runs --------------------------------------------------------------------------------------


def run(catalog: Catalog, config_paths: dict[str, Path], out: Path) -> int:
    return main(
        [
            "run",
            "--config",
            str(config_paths[catalog.config]),
            "--catalog",
            catalog.path,
            "--out",
            str(out),
            "--snapshot-date",
            SNAPSHOT,
            *catalog.args,
        ]
    )


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_bad_rows_are_rejected_and_every_other_row_is_published(
    name: str, real_rows: pd.DataFrame, config_paths: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = ACCEPTED[name](real_rows.copy(), tmp_path)
    out = tmp_path / "out"
    assert run(catalog, config_paths, out) == 0, capsys.readouterr().err

    rejects = pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False)
    found = dict(zip(rejects["row"].astype(int), rejects["reason"]))
    assert sorted(found) == sorted(catalog.rejected)
    for row, start in catalog.rejected.items():
        assert found[row].startswith(start), (row, found[row])

    published = pd.read_parquet(out / "similar_items.parquet")
    queries, candidates = set(published["query_item_id"]), set(published["candidate_item_id"])
    accepted_ids = [item for row, item in enumerate(catalog.ids, start=1) if row not in catalog.rejected]
    # Every accepted row is published as a query, and no rejected one is, or is anyone's candidate.
    assert len(catalog.ids) == N_ROWS and len(set(accepted_ids)) == len(accepted_ids)
    assert queries == set(accepted_ids) and candidates <= queries
    for row, item in zip(rejects["row"].astype(int), rejects["item_id"]):
        if not found[row].startswith("duplicate item_id"):
            assert item.strip() not in queries | candidates
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    counts = summary["counts"]
    assert (counts["rows_read"], counts["rows_accepted"], counts["rows_rejected"]) == (N_ROWS, len(accepted_ids), len(catalog.rejected))
    kinds: dict[str, int] = {}
    for start in catalog.rejected.values():
        kinds[start.split(":")[0]] = kinds.get(start.split(":")[0], 0) + 1
    assert summary["rejects"]["reasons"] == dict(sorted(kinds.items()))
    assert "pss: error" not in capsys.readouterr().err


@pytest.mark.parametrize("name", list(FAILED))
def test_unusable_catalogs_fail_with_one_line_naming_where(
    name: str,
    real_rows: pd.DataFrame,
    config_paths: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on this endpoint: pyarrow's S3 client fails at once, as without credentials or on a 403.
    unreachable = pafs.S3FileSystem(
        endpoint_override="127.0.0.1:9",
        scheme="http",
        access_key="none",
        secret_key="none",
        region="us-east-1",
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        connect_timeout=1,
        request_timeout=1,
    )
    monkeypatch.setattr(storage, "_s3_fs", unreachable)
    catalog = FAILED[name](real_rows.copy(), tmp_path)
    assert catalog.error is not None
    out = tmp_path / "out"

    code = run(catalog, config_paths, out)

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("pss: error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    for fragment in catalog.error:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err
    assert not (out / "similar_items.parquet").exists() and not (out / "run_summary.json").exists()


def test_the_suite_covers_thirty_bad_inputs() -> None:
    assert len(ACCEPTED) + len(FAILED) >= 30
