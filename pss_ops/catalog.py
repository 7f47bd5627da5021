"""Catalog input contract: read CSV or Parquet, validate every row, keep bad rows with their reason."""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pss_ops import storage
from pss_ops.config import VECTOR_COLUMNS, AppConfig, PrecomputedVectorFeature

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("item_id", "title")
OPTIONAL_TEXT_COLUMNS = ("category", "description", "brand", "price")
REJECT_COLUMNS = ("row", "item_id", "reason", "record")


class CatalogError(ValueError):
    """The catalog cannot be used at all (format, missing column, unknown category)."""


class RejectThresholdError(CatalogError):
    """More rows were rejected than the configured fraction allows."""


@dataclass(frozen=True)
class CatalogLoad:
    """The accepted rows (normalised), the rejected rows with reasons, and the counts."""

    accepted: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    rows_out_of_scope: int
    attribute_columns: tuple[str, ...]

    @property
    def reject_reasons(self) -> dict[str, int]:
        """Reject counts by reason kind (the text before the first colon)."""
        return dict(sorted(Counter(r.split(":")[0] for r in self.rejects["reason"]).items()))


def read_catalog(uri: str) -> pd.DataFrame:
    """Read a catalog file into strings (CSV) or native types (Parquet)."""
    lowered = uri.lower()
    if lowered.endswith((".parquet", ".pq")):
        table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
        frame = table.to_pandas()
    elif lowered.endswith((".csv", ".csv.gz")):
        compression = "gzip" if lowered.endswith(".gz") else None
        try:
            frame = pd.read_csv(
                io.BytesIO(storage.read_bytes(uri)),
                dtype=str,
                keep_default_na=False,
                compression=compression,
            )
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise CatalogError(f"catalog {uri} is not readable CSV: {err}") from None
    else:
        raise CatalogError(f"catalog {uri}: unsupported format; use .csv, .csv.gz or .parquet")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CatalogError(
            f"catalog {uri} is missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"found columns: {', '.join(map(str, frame.columns))}"
        )
    return frame


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _parse_vector(value: Any) -> np.ndarray | None:
    """A vector cell as float32, None when empty; ValueError when not a list of numbers."""
    if _is_blank(value):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError("not a flat list")
    return array


def _vector_problem(value: Any, column: str, expected: int | None, required: bool) -> tuple[str | None, np.ndarray | None]:
    try:
        vector = _parse_vector(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        return f"bad vector: {column} is not a list of numbers", None
    if vector is None:
        return (f"missing vector: {column} is empty" if required else None), None
    if expected is not None and len(vector) != expected:
        return f"wrong vector length: {column} has {len(vector)} values, expected {expected}", None
    if not np.all(np.isfinite(vector)):
        return f"non-finite vector: {column} contains NaN or inf", None
    if not np.any(vector):
        return f"zero vector: {column} is all zeros and has no direction", None
    return None, vector.astype(np.float32)


def _expected_dims(frame: pd.DataFrame, config: AppConfig) -> dict[str, int | None]:
    """Dims from the config for used vector columns; the most common length for unused ones."""
    configured = {f.column: f.dim for f in config.features if isinstance(f, PrecomputedVectorFeature)}
    dims: dict[str, int | None] = {}
    for column in VECTOR_COLUMNS:
        if column in configured:
            dims[column] = configured[column]
        elif column in frame.columns:
            lengths: Counter[int] = Counter()
            for value in frame[column]:
                try:
                    vector = _parse_vector(value)
                except (ValueError, TypeError, json.JSONDecodeError):
                    continue
                if vector is not None:
                    lengths[len(vector)] += 1
            dims[column] = lengths.most_common(1)[0][0] if lengths else None
    return dims


def _record(row: pd.Series) -> str:
    def element(value: Any) -> Any:
        # Strict JSON has no NaN/inf: keep them visible as strings.
        return str(value) if isinstance(value, float) and not math.isfinite(value) else value

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return [element(v) for v in value.tolist()]
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return None  # a NULL cell (pandas reads NULL as NaN)
        return element(value)

    return json.dumps({k: plain(v) for k, v in row.items()}, default=str, ensure_ascii=False)


def validate_catalog(
    frame: pd.DataFrame,
    config: AppConfig,
    *,
    categories: tuple[str, ...] | None = None,
) -> CatalogLoad:
    """Split rows into accepted and rejected; every reject keeps its full record and reason."""
    rows_read = len(frame)
    configured: list[str] = [f.column for f in config.features if isinstance(f, PrecomputedVectorFeature)]
    for column in configured:
        if column not in frame.columns:
            raise CatalogError(f"catalog is missing column {column!r} required by the config's precomputed feature")
    for attribute in config.filter_attributes:
        if attribute not in frame.columns and attribute != "category":
            raise CatalogError(f"catalog is missing column {attribute!r} used by post_filter")
    dims = _expected_dims(frame, config)
    attribute_columns = tuple(c for c in frame.columns if c not in (*REQUIRED_COLUMNS, *OPTIONAL_TEXT_COLUMNS, *VECTOR_COLUMNS))

    first_seen: dict[str, int] = {}
    reasons: list[str | None] = []
    vectors: dict[str, list[np.ndarray | None]] = {c: [] for c in dims}
    for position, (_, row) in enumerate(frame.iterrows(), start=1):
        reason: str | None = None
        item_id = row["item_id"]
        if _is_blank(item_id):
            reason = "empty item_id: item_id is empty or NULL"
        elif _is_blank(row["title"]):
            reason = "empty title: title is empty or NULL"
        parsed: dict[str, np.ndarray | None] = {}
        for column, expected in dims.items():
            problem, vector = _vector_problem(row[column], column, expected, column in configured)
            if reason is None and problem is not None:
                reason = problem
            parsed[column] = vector
        if not _is_blank(item_id):
            key = str(item_id).strip()
            if key in first_seen:
                reason = reason or f"duplicate item_id: {key!r} first seen at row {first_seen[key]}"
            else:
                first_seen[key] = position
        reasons.append(reason)
        for column in dims:
            vectors[column].append(parsed[column])

    bad = np.array([r is not None for r in reasons], dtype=bool)
    rejects = pd.DataFrame(
        {
            "row": np.flatnonzero(bad) + 1,
            "item_id": [str(v) if not _is_blank(v) else "" for v in frame["item_id"][bad]],
            "reason": [r for r in reasons if r is not None],
            "record": [_record(row) for _, row in frame[bad].iterrows()],
        },
        columns=list(REJECT_COLUMNS),
    )

    accepted = pd.DataFrame({"item_id": frame["item_id"].astype(str).str.strip(), "title": frame["title"].astype(str)})
    default = config.catalog.default_category
    if "category" in frame.columns:
        accepted["category"] = [default if _is_blank(v) else str(v) for v in frame["category"]]
    else:
        accepted["category"] = default
    # Price stays text: real feeds carry currencies ("69.71 gbp") and no step computes with it.
    for column in ("description", "brand", "price"):
        accepted[column] = [None if _is_blank(v) else str(v) for v in frame[column]] if column in frame.columns else None
    for column in dims:
        accepted[column] = vectors[column]
    for column in attribute_columns:
        accepted[column] = [None if _is_blank(v) else str(v) for v in frame[column]]
    accepted = accepted[~bad].reset_index(drop=True)

    rows_out_of_scope = 0
    if categories is not None:
        present = set(accepted["category"])
        unknown = [c for c in categories if c not in present]
        if unknown:
            raise CatalogError(f"requested categories not found in the catalog: {', '.join(unknown)}")
        in_scope = accepted["category"].isin(categories)
        rows_out_of_scope = int((~in_scope).sum())
        accepted = accepted[in_scope].reset_index(drop=True)

    log.info("catalog: %d rows read, %d accepted, %d rejected, %d out of scope", rows_read, len(accepted), len(rejects), rows_out_of_scope)
    return CatalogLoad(accepted, rejects, rows_read, rows_out_of_scope, attribute_columns)


def check_reject_fraction(load: CatalogLoad, max_fraction: float, rejects_uri: str) -> None:
    """Fail the run when too many rows were rejected; the rejects file is already written."""
    if load.rows_read == 0:
        raise CatalogError("catalog has no rows")
    fraction = len(load.rejects) / load.rows_read
    if fraction > max_fraction:
        raise RejectThresholdError(
            f"{len(load.rejects)} of {load.rows_read} rows rejected ({fraction:.2%}), above the limit "
            f"catalog.max_reject_fraction={max_fraction:.2%}; reasons: {load.reject_reasons}; see {rejects_uri}"
        )
