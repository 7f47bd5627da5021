"""Catalog contract on real Amazon-Google rows: every bad row is rejected with its reason and record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pss_ops.catalog.validate import CatalogError, CatalogLoad, RejectThresholdError, check_reject_fraction, read_catalog, validate_catalog
from pss_ops.config import AppConfig, parse_config

CATALOG_CSV = Path(__file__).resolve().parents[3] / "data" / "amazon_google" / "catalog.csv"
N_ROWS = 50
DIM = 4


def make_config(**overrides: Any) -> AppConfig:
    data: dict[str, Any] = {
        "application": "catalog_test",
        "features": [
            {"type": "char_ngram", "dims": 256},
            {"type": "precomputed", "column": "image_vector", "dim": DIM},
        ],
        "post_filter": {"different": ["seller"]},
    }
    data.update(overrides)
    return parse_config(data)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"record is not strict JSON: contains {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def real_rows() -> pd.DataFrame:
    """The first 50 real catalog rows, all text, with a deterministic 4-d image vector each."""
    frame = pd.read_csv(CATALOG_CSV, dtype=str, keep_default_na=False, nrows=N_ROWS)
    assert len(frame) == N_ROWS and frame["item_id"].is_unique
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N_ROWS, DIM)).round(4)
    frame["image_vector"] = [json.dumps(v.tolist()) for v in vectors]
    return frame


@pytest.fixture
def rows(real_rows: pd.DataFrame) -> pd.DataFrame:
    return real_rows.copy()


def load_csv(frame: pd.DataFrame, tmp_path: Path, config: AppConfig | None = None, **kwargs: Any) -> CatalogLoad:
    path = tmp_path / "catalog.csv"
    frame.to_csv(path, index=False)
    return validate_catalog(read_catalog(str(path)), config or make_config(), **kwargs)


def assert_nothing_lost(load: CatalogLoad) -> None:
    assert len(load.accepted) + len(load.rejects) + load.rows_out_of_scope == load.rows_read
    assert list(load.rejects.columns) == ["row", "item_id", "reason", "record"]
    assert not set(load.accepted["item_id"]) & {i for i in load.rejects["item_id"] if i} - _duplicated_ids(load)


def _duplicated_ids(load: CatalogLoad) -> set[str]:
    return {i for i, r in zip(load.rejects["item_id"], load.rejects["reason"]) if r.startswith("duplicate item_id")}


def assert_single_reject(load: CatalogLoad, original: pd.DataFrame, index: int, kind: str, column: str) -> dict[str, Any]:
    """The row at 0-based index is the only reject, with its 1-based row, id, reason and full record."""
    assert load.rows_read == len(original)
    assert len(load.rejects) == 1, load.rejects.to_dict("records")
    reject = load.rejects.iloc[0]
    assert int(reject["row"]) == index + 1
    assert reject["item_id"] == original.iloc[index]["item_id"].strip()
    assert reject["reason"].split(":")[0] == kind
    assert column in reject["reason"]
    assert load.reject_reasons == {kind: 1}
    record = _strict_json(reject["record"])
    assert record == original.iloc[index].to_dict()
    assert len(load.accepted) == len(original) - 1
    assert_nothing_lost(load)
    return record


CSV_CASES = [
    # (0-based row, column, corrupt value, reason kind, column the reason must name)
    (7, "title", "", "empty title", "title"),
    (8, "title", "   ", "empty title", "title"),
    (11, "item_id", "", "empty item_id", "item_id"),
    (13, "image_vector", "[0.1, 0.2, 0.3]", "wrong vector length", "image_vector"),
    (17, "image_vector", "[0.1, NaN, 0.3, 0.4]", "non-finite vector", "image_vector"),
    (19, "image_vector", "[0.1, Infinity, 0.3, 0.4]", "non-finite vector", "image_vector"),
    (23, "image_vector", "[0.1, -Infinity, 0.3, 0.4]", "non-finite vector", "image_vector"),
    (29, "image_vector", "[0.1, 0.2, oops]", "bad vector", "image_vector"),
    (31, "image_vector", "[[0.1, 0.2], [0.3, 0.4]]", "bad vector", "image_vector"),
    (37, "image_vector", "[0, 0, 0, 0]", "zero vector", "image_vector"),
    (41, "image_vector", "", "missing vector", "image_vector"),
]


@pytest.mark.parametrize(("index", "column", "value", "kind", "named"), CSV_CASES, ids=[f"{c[3]}-{c[0]}" for c in CSV_CASES])
def test_csv_reject_reason(rows: pd.DataFrame, tmp_path: Path, index: int, column: str, value: str, kind: str, named: str) -> None:
    rows.loc[index, column] = value
    load = load_csv(rows, tmp_path)
    record = assert_single_reject(load, rows, index, kind, named)
    assert record[column] == value
    if column != "item_id":
        assert rows.iloc[index]["item_id"] not in set(load.accepted["item_id"])


def test_duplicate_item_id_rejects_later_copy_and_names_first_row(rows: pd.DataFrame, tmp_path: Path) -> None:
    first, later = 3, 20
    duplicated = rows.iloc[first]["item_id"]
    rows.loc[later, "item_id"] = duplicated
    load = load_csv(rows, tmp_path)
    assert_single_reject(load, rows, later, "duplicate item_id", "item_id")
    assert f"row {first + 1}" in load.rejects.iloc[0]["reason"]
    kept = load.accepted[load.accepted["item_id"] == duplicated]
    assert kept["title"].tolist() == [rows.iloc[first]["title"]]


def test_duplicate_ids_compare_after_stripping(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[30, "item_id"] = "  " + rows.iloc[2]["item_id"] + " "
    load = load_csv(rows, tmp_path)
    assert load.rejects["row"].tolist() == [31]
    assert "row 3" in load.rejects.iloc[0]["reason"]


def test_many_corruptions_at_once_keep_every_row(rows: pd.DataFrame, tmp_path: Path) -> None:
    corrupt = {2: ("title", ""), 5: ("image_vector", "[1, 2]"), 9: ("item_id", rows.iloc[0]["item_id"]), 44: ("image_vector", "[0,0,0,0]")}
    for index, (column, value) in corrupt.items():
        rows.loc[index, column] = value
    load = load_csv(rows, tmp_path)
    assert load.rejects["row"].tolist() == [i + 1 for i in sorted(corrupt)]
    assert load.reject_reasons == {"duplicate item_id": 1, "empty title": 1, "wrong vector length": 1, "zero vector": 1}
    for reject in load.rejects.itertuples():
        assert _strict_json(reject.record) == rows.iloc[reject.row - 1].to_dict()
    assert len(load.accepted) == N_ROWS - len(corrupt)
    assert_nothing_lost(load)


def test_clean_catalog_accepts_every_row_in_order(rows: pd.DataFrame, tmp_path: Path) -> None:
    load = load_csv(rows, tmp_path)
    assert load.rows_read == N_ROWS
    assert load.rejects.empty
    assert load.accepted["item_id"].tolist() == rows["item_id"].tolist()
    assert load.attribute_columns == ("seller",)
    assert load.accepted["seller"].tolist() == rows["seller"].tolist()


def test_csv_vectors_are_parsed_json_lists(rows: pd.DataFrame, tmp_path: Path) -> None:
    load = load_csv(rows, tmp_path)
    for cell, vector in zip(rows["image_vector"], load.accepted["image_vector"]):
        assert isinstance(vector, np.ndarray) and vector.dtype == np.float32
        np.testing.assert_array_equal(vector, np.asarray(json.loads(cell), dtype=np.float32))


def _to_parquet(frame: pd.DataFrame, path: Path, vectors: list[list[float] | None], titles: list[str | None]) -> None:
    table = pa.table(
        {
            "item_id": pa.array(frame["item_id"].tolist(), pa.string()),
            "title": pa.array(titles, pa.string()),
            "brand": pa.array(frame["brand"].tolist(), pa.string()),
            "seller": pa.array(frame["seller"].tolist(), pa.string()),
            "image_vector": pa.array(vectors, pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path)


def test_parquet_null_title_rejected_with_null_in_record(rows: pd.DataFrame, tmp_path: Path) -> None:
    vectors = [json.loads(v) for v in rows["image_vector"]]
    titles: list[str | None] = rows["title"].tolist()
    titles[12] = None
    path = tmp_path / "catalog.parquet"
    _to_parquet(rows, path, vectors, titles)
    load = validate_catalog(read_catalog(str(path)), make_config())
    assert load.rows_read == N_ROWS
    assert load.rejects["row"].tolist() == [13]
    reject = load.rejects.iloc[0]
    assert reject["item_id"] == rows.iloc[12]["item_id"]
    assert reject["reason"].startswith("empty title") and "title" in reject["reason"]
    record = _strict_json(reject["record"])
    assert record["title"] is None
    assert record["item_id"] == rows.iloc[12]["item_id"]
    assert record["seller"] == rows.iloc[12]["seller"]
    assert record["image_vector"] == pytest.approx(vectors[12], abs=1e-6)
    assert len(load.accepted) == N_ROWS - 1
    assert_nothing_lost(load)


def test_parquet_list_float_vectors(rows: pd.DataFrame, tmp_path: Path) -> None:
    vectors: list[list[float] | None] = [json.loads(v) for v in rows["image_vector"]]
    vectors[4] = [0.5, float("nan"), 0.1, 0.2]
    vectors[6] = [0.5, 0.1, 0.2]
    vectors[8] = None
    vectors[10] = [0.5, float("inf"), 0.1, 0.2]
    path = tmp_path / "catalog.parquet"
    _to_parquet(rows, path, vectors, rows["title"].tolist())
    load = validate_catalog(read_catalog(str(path)), make_config())
    assert load.rejects["row"].tolist() == [5, 7, 9, 11]
    kinds = [r.split(":")[0] for r in load.rejects["reason"]]
    assert kinds == ["non-finite vector", "wrong vector length", "missing vector", "non-finite vector"]
    assert all("image_vector" in r for r in load.rejects["reason"])
    records = [_strict_json(r) for r in load.rejects["record"]]
    assert [r["item_id"] for r in records] == [rows.iloc[i]["item_id"] for i in (4, 6, 8, 10)]
    assert records[0]["image_vector"][1] == "nan" and records[3]["image_vector"][1] == "inf"
    assert records[1]["image_vector"] == pytest.approx([0.5, 0.1, 0.2])
    assert records[2]["image_vector"] is None
    good = [v for i, v in enumerate(vectors) if i not in (4, 6, 8, 10)]
    assert len(load.accepted) == len(good)
    for expected, vector in zip(good, load.accepted["image_vector"]):
        assert vector.dtype == np.float32
        np.testing.assert_array_equal(vector, np.asarray(expected, dtype=np.float32))
    assert_nothing_lost(load)


@pytest.mark.parametrize("column", ["title", "item_id"])
def test_missing_required_column_names_it(rows: pd.DataFrame, tmp_path: Path, column: str) -> None:
    path = tmp_path / "catalog.csv"
    rows.drop(columns=[column]).to_csv(path, index=False)
    with pytest.raises(CatalogError, match=repr(column)):
        read_catalog(str(path))


def test_missing_required_column_in_parquet(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"item_id": rows["item_id"].tolist(), "name": rows["title"].tolist()}), path)
    with pytest.raises(CatalogError, match="'title'"):
        read_catalog(str(path))


def test_missing_precomputed_vector_column_names_it(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    rows.drop(columns=["image_vector"]).to_csv(path, index=False)
    with pytest.raises(CatalogError, match="image_vector"):
        validate_catalog(read_catalog(str(path)), make_config())


def test_missing_post_filter_column_names_it(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    rows.drop(columns=["seller"]).to_csv(path, index=False)
    with pytest.raises(CatalogError, match="seller"):
        validate_catalog(read_catalog(str(path)), make_config())


def test_unsupported_format_is_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(CatalogError, match="unsupported format"):
        read_catalog(str(path))


def _corrupt_titles(rows: pd.DataFrame, count: int) -> pd.DataFrame:
    for index in range(count):
        rows.loc[index * 5, "title"] = ""
    return rows


def test_reject_fraction_above_limit_raises_with_counts(rows: pd.DataFrame, tmp_path: Path) -> None:
    config = make_config(catalog={"max_reject_fraction": 0.04})
    load = load_csv(_corrupt_titles(rows, 3), tmp_path, config)
    assert len(load.rejects) == 3
    with pytest.raises(RejectThresholdError) as info:
        check_reject_fraction(load, config.catalog.max_reject_fraction, "s3://bucket/run/rejects.csv")
    message = str(info.value)
    assert f"3 of {N_ROWS}" in message
    assert "empty title" in message
    assert "s3://bucket/run/rejects.csv" in message
    assert isinstance(info.value, CatalogError)


@pytest.mark.parametrize("count", [0, 1, 2])
def test_reject_fraction_at_or_under_limit_passes(rows: pd.DataFrame, tmp_path: Path, count: int) -> None:
    config = make_config(catalog={"max_reject_fraction": 0.04})
    load = load_csv(_corrupt_titles(rows, count), tmp_path, config)
    assert len(load.rejects) == count
    check_reject_fraction(load, config.catalog.max_reject_fraction, "rejects.csv")


def test_reject_fraction_on_empty_catalog_is_error(rows: pd.DataFrame, tmp_path: Path) -> None:
    load = load_csv(rows.iloc[:0], tmp_path)
    assert load.rows_read == 0
    with pytest.raises(CatalogError, match="no rows"):
        check_reject_fraction(load, 0.5, "rejects.csv")


def _with_categories(rows: pd.DataFrame) -> pd.DataFrame:
    rows["category"] = ["software" if i % 3 == 0 else "games" if i % 3 == 1 else "" for i in range(len(rows))]
    return rows


def test_missing_category_gets_default(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows = _with_categories(rows)
    load = load_csv(rows, tmp_path, make_config(catalog={"default_category": "misc"}))
    expected = [c or "misc" for c in rows["category"]]
    assert load.accepted["category"].tolist() == expected


def test_no_category_column_gets_default(rows: pd.DataFrame, tmp_path: Path) -> None:
    config = make_config()
    load = load_csv(rows, tmp_path, config)
    assert set(load.accepted["category"]) == {config.catalog.default_category}


def test_categories_filter_counts_out_of_scope(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows = _with_categories(rows)
    rows.loc[0, "title"] = ""  # software, rejected
    rows.loc[1, "title"] = ""  # games, rejected: counted as rejected, not out of scope
    load = load_csv(rows, tmp_path, categories=("software",))
    assert load.rejects["row"].tolist() == [1, 2]
    assert set(load.accepted["category"]) == {"software"}
    software_ok = sum(1 for i, c in enumerate(rows["category"]) if c == "software" and i != 0)
    others_ok = sum(1 for i, c in enumerate(rows["category"]) if c != "software" and i != 1)
    assert len(load.accepted) == software_ok
    assert load.rows_out_of_scope == others_ok
    assert_nothing_lost(load)


def test_categories_filter_can_select_default_category(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows = _with_categories(rows)
    config = make_config()
    load = load_csv(rows, tmp_path, config, categories=(config.catalog.default_category, "games"))
    assert set(load.accepted["category"]) == {config.catalog.default_category, "games"}
    assert load.rows_out_of_scope == (rows["category"] == "software").sum()
    assert_nothing_lost(load)


def test_unknown_category_names_it(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows = _with_categories(rows)
    with pytest.raises(CatalogError, match="turntables"):
        load_csv(rows, tmp_path, categories=("software", "turntables"))


def test_unused_vector_column_uses_most_common_length(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows["behavior_vector"] = [json.dumps([1.0, float(i), 2.0]) for i in range(len(rows))]
    rows.loc[15, "behavior_vector"] = "[1.0, 2.0]"
    rows.loc[16, "behavior_vector"] = ""  # unused column: empty is allowed
    load = load_csv(rows, tmp_path)
    assert load.rejects["row"].tolist() == [16]
    assert "behavior_vector" in load.rejects.iloc[0]["reason"]
    assert "expected 3" in load.rejects.iloc[0]["reason"]
    by_id = dict(zip(load.accepted["item_id"], load.accepted["behavior_vector"]))
    assert by_id[rows.iloc[16]["item_id"]] is None
    assert math.isclose(float(by_id[rows.iloc[0]["item_id"]][2]), 2.0)


def test_missing_vector_in_used_column_is_rejected(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[16, "image_vector"] = ""
    load = load_csv(rows, tmp_path)
    assert load.rejects["row"].tolist() == [17]
    assert load.rejects.iloc[0]["reason"].startswith("missing vector: image_vector")
