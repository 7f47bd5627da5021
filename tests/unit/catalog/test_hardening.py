"""Every accepted item gets a usable vector, and a catalog that cannot be used fails with one message naming where.

Real Amazon–Google rows, each test corrupting a few of them the way real feeds do.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from pss_ops import storage
from pss_ops.catalog.source import open_catalog
from pss_ops.catalog.validate import CatalogError, CatalogLoad, CatalogValidator, read_catalog, validate_catalog
from pss_ops.catalog.vectors import OK, OUT_OF_RANGE, ZERO, parse_vectors, problems, reason
from pss_ops.config import AppConfig, parse_config
from pss_ops.steps.plan import make_context, plan

CATALOG_CSV = Path(__file__).resolve().parents[3] / "data" / "amazon_google" / "catalog.csv"
N_ROWS = 40


def make_config(**overrides: Any) -> AppConfig:
    """Character 3-5-grams and digit-bearing tokens of the title: the quick config whose gaps short titles fall into."""
    data: dict[str, Any] = {
        "application": "hardening_test",
        "features": [{"type": "char_ngram", "name": "grams", "dims": 256}, {"type": "model_tokens", "name": "numbers", "dims": 256}],
        "post_filter": {"different": ["seller"]},
    }
    data.update(overrides)
    return parse_config(data)


@pytest.fixture(scope="module")
def real_rows() -> pd.DataFrame:
    frame = pd.read_csv(CATALOG_CSV, dtype=str, keep_default_na=False, nrows=N_ROWS)
    assert frame["item_id"].is_unique and (frame["title"].str.len() > 5).all()
    return frame


@pytest.fixture
def rows(real_rows: pd.DataFrame) -> pd.DataFrame:
    return real_rows.copy()


def load_csv(frame: pd.DataFrame, tmp_path: Path, config: AppConfig | None = None, **kwargs: Any) -> CatalogLoad:
    path = tmp_path / "catalog.csv"
    frame.to_csv(path, index=False)
    return validate_catalog(read_catalog(str(path)), config or make_config(), **kwargs)


def load_parquet(table: pa.Table, tmp_path: Path, config: AppConfig | None = None) -> CatalogLoad:
    path = tmp_path / "catalog.parquet"
    pq.write_table(table, path)
    return validate_catalog(read_catalog(str(path)), config or make_config())


def rejected(load: CatalogLoad) -> dict[int, str]:
    """1-based row -> reason."""
    return dict(zip(load.rejects["row"].astype(int), load.rejects["reason"]))


def assert_accounted(load: CatalogLoad) -> None:
    assert len(load.accepted) + len(load.rejects) + load.rows_out_of_scope == load.rows_read
    assert not set(load.accepted["item_id"]) & set(load.rejects["item_id"])


def real_table(rows: pd.DataFrame, **columns: pa.Array) -> pa.Table:
    """The real rows as a Parquet-typed table, with some columns replaced."""
    data = {c: pa.array(rows[c].tolist(), pa.string()) for c in rows.columns}
    data.update(columns)
    return pa.table(data)


# --- 1. column types ---------------------------------------------------------------------------


def test_integer_decimal_and_boolean_columns_become_their_text(rows: pd.DataFrame, tmp_path: Path) -> None:
    ids = list(range(1000, 1000 + N_ROWS))
    prices = [decimal.Decimal("12.50")] * N_ROWS
    table = real_table(
        rows,
        item_id=pa.array(ids, pa.int64()),
        price=pa.array(prices, pa.decimal128(10, 2)),
        in_stock=pa.array([i % 2 == 0 for i in range(N_ROWS)]),
        seller=pa.array(rows["seller"].tolist()).dictionary_encode(),
    )
    load = load_parquet(table, tmp_path)
    assert load.rejects.empty
    assert load.accepted["item_id"].tolist() == [str(i) for i in ids]
    assert set(load.accepted["price"]) == {"12.50"}
    assert load.accepted["in_stock"].tolist()[:2] == ["true", "false"]
    assert load.accepted["seller"].tolist() == rows["seller"].tolist()


def test_float_ids_are_integer_text_when_exact_and_rejected_otherwise(rows: pd.DataFrame, tmp_path: Path) -> None:
    ids = [float(100 + i) for i in range(N_ROWS)]
    ids[3], ids[5], ids[7], ids[9] = 12345.0, 5.9e20, 12.5, float(2**53)
    load = load_parquet(real_table(rows, item_id=pa.array(ids, pa.float64())), tmp_path)
    assert load.accepted["item_id"].tolist()[3] == "12345"
    assert str(2**53) in set(load.accepted["item_id"])
    assert not any("." in i or "e" in i for i in load.accepted["item_id"])
    reasons = rejected(load)
    assert sorted(reasons) == [6, 8]
    assert reasons[6].startswith("bad item_id: item_id 5.9e+20 ") and "ids must be stored as text" in reasons[6]
    assert reasons[8].startswith("bad item_id: item_id 12.5 ")
    assert load.rejects["item_id"].tolist() == ["5.9e+20", "12.5"]
    assert_accounted(load)


def test_integer_ids_with_nulls_read_through_pandas_stay_integers(rows: pd.DataFrame, tmp_path: Path) -> None:
    ids: list[int | None] = [7_000_000_000 + i for i in range(N_ROWS)]
    ids[4] = None
    load = load_parquet(real_table(rows, item_id=pa.array(ids, pa.int64())), tmp_path)
    # read_catalog's frame holds them as float64 with NaN; they come back as the integers they were.
    assert load.accepted["item_id"].tolist() == [str(i) for i in ids if i is not None]
    assert rejected(load) == {5: "empty item_id: item_id is empty or NULL"}


def test_float_titles_and_prices_are_their_shortest_text(rows: pd.DataFrame, tmp_path: Path) -> None:
    titles: list[Any] = [float(i) + 0.5 for i in range(N_ROWS)]
    table = real_table(rows, title=pa.array(titles, pa.float64()), price=pa.array([0.1] * N_ROWS, pa.float32()))
    load = load_parquet(table, tmp_path)
    assert load.accepted["title"].tolist()[:3] == ["0.5", "1.5", "2.5"]
    assert set(load.accepted["price"]) == {"0.1"}


@pytest.mark.parametrize(
    ("column", "array"),
    [
        ("title", pa.array([["instant", "immersion", "spanish"]] * N_ROWS, pa.list_(pa.string()))),
        ("title", pa.array([["a"]] * N_ROWS, pa.large_list(pa.string()))),
        ("brand", pa.array([{"name": "sony"}] * N_ROWS, pa.struct([("name", pa.string())]))),
        ("seller", pa.array([[("k", "v")]] * N_ROWS, pa.map_(pa.string(), pa.string()))),
        ("item_id", pa.array([b"\x00\x01"] * N_ROWS, pa.binary())),
        ("category", pa.array([dt.datetime(2024, 5, 1)] * N_ROWS, pa.timestamp("s"))),
    ],
    ids=["list-title", "large_list-title", "struct-brand", "map-attribute", "binary-id", "timestamp-category"],
)
def test_nested_binary_and_other_types_refuse_the_catalog(rows: pd.DataFrame, tmp_path: Path, column: str, array: pa.Array) -> None:
    path = tmp_path / "catalog.parquet"
    pq.write_table(real_table(rows, **{column: array}), path)
    source = open_catalog(str(path))
    validator = CatalogValidator(source, make_config())
    with pytest.raises(CatalogError) as info:
        for batch in source.batches():
            validator.validate(batch)
    message = str(info.value)
    assert message.startswith(f"catalog {path}: column {column!r} has type ") and message.endswith("; it must be text")
    assert str(pq.read_schema(path).field(column).type) in message


def test_a_list_title_is_never_stored_as_its_repr(rows: pd.DataFrame, tmp_path: Path) -> None:
    titles = [t.split() for t in rows["title"]]
    with pytest.raises(CatalogError, match=r"column 'title' has type list<.*string>; it must be text"):
        load_parquet(real_table(rows, title=pa.array(titles, pa.list_(pa.string()))), tmp_path)


def test_a_frame_mixing_numbers_and_strings_in_a_column_names_it(rows: pd.DataFrame) -> None:
    frame = rows.astype(object)
    frame.loc[3, "item_id"] = 12345
    with pytest.raises(CatalogError, match="item_id"):
        validate_catalog(frame, make_config())


# --- 2. empty after normalisation ----------------------------------------------------------------


@pytest.mark.parametrize("title", ["\u200b", "\ufeff", " \u200b\u200b ", "\x00", "\x1c\x1d\x7f", "\u2060\t"])
def test_titles_without_a_visible_character_are_empty(rows: pd.DataFrame, tmp_path: Path, title: str) -> None:
    rows.loc[6, "title"] = title
    load = load_csv(rows, tmp_path)
    assert rejected(load) == {7: f"empty title: title {title!r} has no visible character"}
    assert json.loads(load.rejects.iloc[0]["record"])["title"] == title
    assert_accounted(load)


@pytest.mark.parametrize("item_id", ["\u200b", " \ufeff ", "\u200b\u200d"])
def test_ids_without_a_visible_character_are_empty(rows: pd.DataFrame, tmp_path: Path, item_id: str) -> None:
    rows.loc[2, "item_id"] = item_id
    load = load_csv(rows, tmp_path)
    assert rejected(load) == {3: f"empty item_id: item_id {item_id!r} has no visible character"}


def test_a_visible_title_is_stored_as_written(rows: pd.DataFrame, tmp_path: Path) -> None:
    title = "  sony\u200b pslx350h\ufeff turntable "
    rows.loc[1, "title"] = title
    load = load_csv(rows, tmp_path)
    assert load.rejects.empty
    assert load.accepted["title"].tolist()[1] == title


# --- 3. values the warehouse must store ----------------------------------------------------------


def test_control_characters_in_ids_and_categories_are_rejected_and_named(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows["category"] = "software"
    rows.loc[4, "item_id"] = "amazon:b0\x0000jz4hqo"
    rows.loc[8, "item_id"] = "amazon:\x1bb000"
    rows.loc[12, "category"] = "soft\x00ware"
    rows.loc[14, "category"] = "games\x85"
    rows.loc[16, "item_id"] = " amazon:padded\n"  # trailing whitespace is trimmed from ids, as always
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)
    load = validate_catalog(read_catalog(str(path)), make_config())
    reasons = rejected(load)
    assert reasons == {
        5: "bad item_id: item_id 'amazon:b0\\x0000jz4hqo' contains the control character U+0000",
        9: "bad item_id: item_id 'amazon:\\x1bb000' contains the control character U+001B",
        13: "bad category: category 'soft\\x00ware' contains the control character U+0000",
        15: "bad category: category 'games\\x85' contains the control character U+0085",
    }
    assert "amazon:padded" in set(load.accepted["item_id"])
    assert load.reject_reasons == {"bad category": 2, "bad item_id": 2}
    assert_accounted(load)


# --- 4. no features --------------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["tv", "PC", "a", "é", "İ", "t\u200b"])
def test_titles_no_feature_can_represent_are_rejected_with_what_each_needs(rows: pd.DataFrame, tmp_path: Path, title: str) -> None:
    rows.loc[10, "title"] = title
    load = load_csv(rows, tmp_path)
    assert rejected(load) == {
        11: f"no features: title {title!r} yields no features: char_ngram 'grams' needs at least 3 characters, "
        "model_tokens 'numbers' needs a token with a digit"
    }
    assert rows.loc[10, "item_id"] not in set(load.accepted["item_id"])
    assert_accounted(load)


# Whatever scikit-learn makes of them: " tv " is four characters, so two trigrams; "İ" lowercases to two.
@pytest.mark.parametrize("title", ["tv 2", "abc", "x y", " tv ", "\u200btv", "İx", "x1", "中文标"])
def test_short_titles_some_feature_represents_are_accepted(rows: pd.DataFrame, tmp_path: Path, title: str) -> None:
    rows.loc[10, "title"] = title
    assert load_csv(rows, tmp_path).rejects.empty


def test_lexical_retriever_needs_are_named_too(rows: pd.DataFrame, tmp_path: Path) -> None:
    config = make_config(
        features=[{"type": "model_tokens", "name": "numbers", "dims": 256}],
        retrievers=[{"type": "dense"}, {"type": "lexical", "name": "tfidf", "analyzer": "word", "ngram_min": 1, "ngram_max": 2}],
    )
    rows.loc[3, "title"] = "a b c"
    rows.loc[5, "title"] = "tv"  # a word of two letters: the lexical retriever sees it
    load = load_csv(rows, tmp_path, config)
    assert rejected(load) == {
        4: "no features: title 'a b c' yields no features: model_tokens 'numbers' needs a token with a digit, "
        "lexical retriever 'tfidf' (word 1-2) needs a word of two or more letters or digits"
    }


def test_a_precomputed_vector_represents_any_title(rows: pd.DataFrame, tmp_path: Path) -> None:
    config = make_config(features=[{"type": "char_ngram", "dims": 256}, {"type": "precomputed", "column": "image_vector", "dim": 2}])
    rows["image_vector"] = "[0.5, 1.0]"
    rows.loc[3, "title"] = "tv"
    assert load_csv(rows, tmp_path, config).rejects.empty


# --- 5. float32 range ------------------------------------------------------------------------------


def vector_config() -> AppConfig:
    return make_config(features=[{"type": "char_ngram", "dims": 256}, {"type": "precomputed", "column": "image_vector", "dim": 3}])


VECTOR_CASES = [
    ("[1e39, 0.5, 0.5]", "vector out of float32 range: column image_vector has 1e+39, beyond ±3.4e+38"),
    ("[0.5, -1e39, 0.5]", "vector out of float32 range: column image_vector has -1e+39, beyond ±3.4e+38"),
    ("[1e20, 1e20, 0.5]", "vector out of float32 range: column image_vector has 1e+20, and its L2 norm overflows float32"),
    (
        "[1e-30, 1e-30, 0]",
        "vector out of float32 range: column image_vector's largest value is 1e-30, and its L2 norm underflows to 0 in float32",
    ),
    ("[1e-50, 0, 0]", "zero vector: image_vector is all zeros as float32 (its largest value is 1e-50) and has no direction"),
    ("[0, 0, 0]", "zero vector: image_vector is all zeros and has no direction"),
]


@pytest.mark.parametrize(("cell", "expected"), VECTOR_CASES, ids=[c for c, _ in VECTOR_CASES])
def test_vectors_are_checked_as_float32(rows: pd.DataFrame, tmp_path: Path, cell: str, expected: str) -> None:
    rows["image_vector"] = "[0.25, 1e18, -3e-38]"  # extreme but usable in float32, its norm too
    rows.loc[9, "image_vector"] = cell
    load = load_csv(rows, tmp_path, vector_config())
    assert rejected(load) == {10: expected}
    for vector in load.accepted["image_vector"]:
        assert np.isfinite(vector).all() and 0 < np.linalg.norm(vector[None, :], axis=-1)[0] < np.inf


def test_float32_checks_agree_on_list_columns_and_ragged_batches() -> None:
    cells = [[1e39, 1.0, 1.0], [1.0, 2.0], [1e-50, 0.0, 0.0], [1e20, 1.0, 1.0], None, [1e-30, 1e-30, 0.0], [1.0, 2.0, 3.0], [5.0]]
    expected = [OUT_OF_RANGE, OK, ZERO, OUT_OF_RANGE, OK, OUT_OF_RANGE, OK, OK]
    # No expected width: every row is checked at its own length, through the per-value (ragged) path.
    for kind in (pa.list_(pa.float64()), pa.large_list(pa.float64())):
        assert problems(parse_vectors(pa.array(cells, kind)), None, False).tolist() == expected
    text = pa.array([json.dumps(c) if c is not None else "" for c in cells], pa.string())
    assert problems(parse_vectors(text), None, False).tolist() == expected
    uniform = [c for c in cells if c is None or len(c) == 3]
    codes = problems(parse_vectors(pa.array(uniform, pa.list_(pa.float64()))), 3, True)
    assert codes.tolist() == [OUT_OF_RANGE, ZERO, OUT_OF_RANGE, 2, OUT_OF_RANGE, OK]  # 2: the missing (NULL) cell
    assert reason(OUT_OF_RANGE, "v", np.array([1e39, 1.0]), 2) == "vector out of float32 range: column v has 1e+39, beyond ±3.4e+38"


# --- 6. catalogs that cannot be used at all ----------------------------------------------------------


def test_duplicate_column_names_are_refused_in_csv_and_parquet(rows: pd.DataFrame, tmp_path: Path) -> None:
    csv_path = tmp_path / "catalog.csv"
    lines = rows.to_csv(index=False).splitlines()
    csv_path.write_text("\n".join([lines[0] + ",title", *(line + ",duplicate" for line in lines[1:])]) + "\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=rf"catalog {csv_path} has duplicate column name\(s\) 'title'"):
        open_catalog(str(csv_path))
    parquet_path = tmp_path / "catalog.parquet"
    table = real_table(rows)
    pq.write_table(pa.table([*table.columns, table.column("brand")], names=[*table.column_names, "brand"]), parquet_path)
    with pytest.raises(CatalogError, match=rf"catalog {parquet_path} has duplicate column name\(s\) 'brand'"):
        open_catalog(str(parquet_path))


def test_folders_and_missing_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "catalog.parquet"
    folder.mkdir()
    with pytest.raises(CatalogError, match=rf"^catalog {folder} is a folder"):
        open_catalog(str(folder))
    for name in ("missing.csv", "missing.csv.gz", "missing.parquet"):
        with pytest.raises(CatalogError, match=rf"^catalog {tmp_path / name} not found$"):
            open_catalog(str(tmp_path / name))


def test_a_corrupt_parquet_row_group_is_named_with_its_rows(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    pq.write_table(real_table(rows), path, row_group_size=10)
    column = pq.ParquetFile(path).metadata.row_group(2).column(1)  # title of data rows 21-30
    data = bytearray(path.read_bytes())
    for offset in range(column.data_page_offset, column.data_page_offset + 40):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    source = open_catalog(str(path))
    with pytest.raises(CatalogError) as info:
        list(source.batches(batch_rows=7))
    message = str(info.value)
    assert message.startswith(f"catalog {path} is not readable Parquet: row group 3 of 4 (data rows 21-30): ")
    assert "\n" not in message


def test_a_corrupt_gzip_is_named(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv.gz"
    packed = gzip.compress(rows.to_csv(index=False).encode())
    path.write_bytes(packed[: len(packed) // 2] + b"\x00" * 64 + packed[len(packed) // 2 :])
    with pytest.raises(CatalogError, match=rf"^catalog {path} is not readable CSV: .*(zlib|gzip|inflate|compress)"):
        list(open_catalog(str(path)).batches())


def test_an_unreadable_s3_catalog_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens there: the AWS SDK fails at once, as it does without credentials or with a 403.
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
    for uri in ("s3://no-such-bucket/catalog.csv", "s3://no-such-bucket/catalog.parquet"):
        with pytest.raises(CatalogError, match=rf"^cannot read catalog {uri}: .+"):
            open_catalog(uri)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_a_missing_s3_bucket_or_key_says_so(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t").create_bucket(
        Bucket="catalogs"
    )
    monkeypatch.setattr(storage, "_s3_fs", storage.s3_filesystem(moto_endpoint, "us-east-1", "t", "t"))
    for uri in ("s3://no-such-bucket/catalog.csv", "s3://catalogs/missing.parquet", "s3://catalogs/missing.csv.gz"):
        with pytest.raises(CatalogError, match=rf"^cannot read catalog {uri}: .*(does not exist|NoSuchBucket|No such)"):
            open_catalog(uri)


def test_invalid_utf8_names_the_row_and_column(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    text = rows.to_csv(index=False).encode()
    title = rows.loc[25, "title"].encode()
    path.write_bytes(text.replace(title, title[:5] + b"\xff\xfe" + title[5:], 1))
    with pytest.raises(CatalogError) as info:
        list(open_catalog(str(path)).batches())
    assert str(info.value) == f"catalog {path}: row 26, column 'title' is not valid UTF-8 (bytes 0xff 0xfe)"


def test_invalid_utf8_after_a_quoted_newline_is_found_on_its_row(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[3, "description"] = "line one\nline two"
    rows.loc[30, "brand"] = "brandmarker"
    path = tmp_path / "catalog.csv.gz"
    path.write_bytes(gzip.compress(rows.to_csv(index=False).encode().replace(b"brandmarker", b"brand\xc3(marker")))
    with pytest.raises(CatalogError, match=rf"^catalog {path}: row 31, column 'brand' is not valid UTF-8 \(bytes 0xc3\)$"):
        list(open_catalog(str(path)).batches())


def _mislabelled_utf8(values: list[bytes]) -> pa.Array:
    """Bytes labelled as a string column without a check, as some Parquet writers do."""
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())


@pytest.mark.parametrize("encode", [False, True], ids=["plain", "dictionary"])
def test_invalid_utf8_in_parquet_names_the_row_and_column(rows: pd.DataFrame, tmp_path: Path, encode: bool) -> None:
    brands = [b.encode() for b in rows["brand"]]
    brands[17] = b"sony \xe9lectronique"
    array = _mislabelled_utf8(brands)
    path = tmp_path / "catalog.parquet"
    pq.write_table(real_table(rows, brand=array.dictionary_encode() if encode else array), path, row_group_size=8)
    expected = f"catalog {path}: row 18, column 'brand' is not valid UTF-8 (bytes 0xe9)"
    source = open_catalog(str(path))
    validator = CatalogValidator(source, make_config())
    with pytest.raises(CatalogError) as info:
        for batch in source.batches(batch_rows=5):
            validator.validate(batch)
    assert str(info.value) == expected
    with pytest.raises(CatalogError) as info:
        read_catalog(str(path))
    assert str(info.value) == expected


def test_unknown_categories_list_the_catalogs_own(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows["category"] = [f"cat{i % 25:02d}" for i in range(N_ROWS)]
    with pytest.raises(CatalogError) as info:
        load_csv(rows, tmp_path, categories=("cat01", "turntables"))
    message = str(info.value)
    assert "not found in the catalog" in message and "turntables" in message
    assert "it has 25 categories with accepted rows: " + ", ".join(f"cat{i:02d}" for i in range(20)) + ", ..." in message


def test_plan_fails_when_no_row_is_accepted(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows["title"] = "tv"
    path = tmp_path / "catalog.csv"
    rows.to_csv(path, index=False)
    config = make_config(catalog={"max_reject_fraction": 1.0})
    ctx = make_context(
        config,
        catalog_uri=str(path),
        run_uri=str(tmp_path / "run"),
        snapshot_date=dt.date(2024, 5, 1),
        run_id="r",
        cache_uri=str(tmp_path / "cache.sqlite"),
    )
    with pytest.raises(CatalogError) as info:
        plan(ctx)
    message = str(info.value)
    assert message.startswith(f"catalog {path}: no row accepted in scope ({N_ROWS} read, {N_ROWS} rejected, 0 out of scope)")
    assert "'no features': 40" in message
    assert len(pd.read_csv(tmp_path / "run" / "plan" / "rejects.csv")) == N_ROWS  # kept for the operator
