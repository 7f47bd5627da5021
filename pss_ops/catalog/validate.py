"""Catalog input contract: stream CSV or Parquet in batches, validate every row, keep bad rows with their reason.

Nothing here holds the whole catalog: rows arrive as Arrow record batches (CSV blocks or Parquet row
groups) and are checked column-wise. The one catalog-wide state is the map of item ids seen so far,
which duplicate detection needs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops import storage
from pss_ops.catalog.source import BATCH_ROWS, REQUIRED_COLUMNS, CatalogError, CatalogSource, open_catalog
from pss_ops.catalog.vectors import OK, blank_mask, parse_vectors, problems, reason
from pss_ops.config import VECTOR_COLUMNS, AppConfig

log = logging.getLogger(__name__)

OPTIONAL_TEXT_COLUMNS = ("category", "description", "brand", "price")
REJECT_COLUMNS = ("row", "item_id", "reason", "record")


class RejectThresholdError(CatalogError):
    """More rows were rejected than the configured fraction allows."""


@dataclass(frozen=True)
class Reject:
    """One rejected row: its 1-based position in the file, its id, why, and the full record as JSON."""

    row: int
    item_id: str
    reason: str
    record: str


# --- validation -------------------------------------------------------------------------------


def _expected_dims(source: CatalogSource, config: AppConfig, batch_rows: int) -> dict[str, int | None]:
    """Dims from the config for used vector columns; the most common length (first seen on ties) for unused ones."""
    configured: dict[str, int] = config.vector_columns
    dims: dict[str, int | None] = {c: configured.get(c) for c in VECTOR_COLUMNS if c in configured or c in source.columns}
    unused = [c for c in dims if c not in configured]
    if unused:
        lengths: dict[str, Counter[int]] = {c: Counter() for c in unused}
        for batch in source.batches(unused, batch_rows):
            for column in unused:
                parsed = parse_vectors(batch.column(column))
                counted = parsed.lengths[~parsed.bad & ~parsed.blank]
                # Counter keeps first-insertion order, which most_common uses to break ties.
                values, first = np.unique(counted, return_index=True)
                tally = dict(zip(values.tolist(), np.bincount(np.searchsorted(values, counted), minlength=len(values)).tolist()))
                for value in values[np.argsort(first)].tolist():
                    lengths[column][value] += tally[value]
        for column in unused:
            dims[column] = lengths[column].most_common(1)[0][0] if lengths[column] else None
    return dims


def _text(array: pa.Array, blank: np.ndarray) -> pa.Array:
    """Cells as text, NULL where blank; non-text cells become their Python str()."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), pc.cast(array, pa.string()))
    return pa.array([None if b else str(v) for v, b in zip(array.to_pylist(), blank)], pa.string())


def _plain(value: Any) -> Any:
    """A cell for the reject record: strict JSON has no NaN/inf, so those stay visible as strings."""
    if isinstance(value, float):
        return None if math.isnan(value) else value if math.isfinite(value) else str(value)
    if isinstance(value, list):
        # A NULL element is as unusable as NaN and reads as one (frames hold both as NaN).
        return ["nan" if v is None else str(v) if isinstance(v, float) and not math.isfinite(v) else v for v in value]
    return value


def _record(row: dict[str, Any]) -> str:
    return json.dumps({k: _plain(v) for k, v in row.items()}, default=str, ensure_ascii=False)


@dataclass(frozen=True)
class CatalogCounts:
    """What validating the whole catalog found."""

    rows_read: int
    rows_rejected: int
    rows_out_of_scope: int
    reject_reasons: dict[str, int]
    categories: tuple[str, ...]
    attribute_columns: tuple[str, ...]


class CatalogValidator:
    """Validates batches in file order into accepted rows (normalised) and rejects; duplicates span batches."""

    def __init__(
        self,
        source: CatalogSource,
        config: AppConfig,
        *,
        categories: tuple[str, ...] | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.configured = tuple(config.vector_columns)
        for column in self.configured:
            if column not in source.columns:
                raise CatalogError(f"catalog is missing column {column!r} required by the config's precomputed feature or vector retriever")
        for attribute in config.filter_attributes:
            if attribute not in source.columns and attribute != "category":
                raise CatalogError(f"catalog is missing column {attribute!r} used by post_filter")
        self.dims = _expected_dims(source, config, batch_rows)
        reserved = (*REQUIRED_COLUMNS, *OPTIONAL_TEXT_COLUMNS, *VECTOR_COLUMNS)
        self.attribute_columns = tuple(c for c in source.columns if c not in reserved)
        self.default_category = config.catalog.default_category
        self.categories = categories
        self.schema = pa.schema(
            [
                *[(c, pa.string()) for c in ("item_id", "title", *OPTIONAL_TEXT_COLUMNS)],
                *[(c, pa.list_(pa.float32())) for c in self.dims],
                *[(c, pa.string()) for c in self.attribute_columns],
            ]
        )
        self.rows_read = 0
        self.rows_out_of_scope = 0
        self.reasons: Counter[str] = Counter()
        self._first_seen: dict[str, int] = {}
        self._present: set[str] = set()
        self._in_scope: set[str] = set()

    def validate(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[Reject]]:
        """The batch's accepted in-scope rows in the partition schema, and its rejects."""
        n, start = batch.num_rows, self.rows_read
        self.rows_read += n
        names = batch.schema.names
        item, title = batch.column("item_id"), batch.column("title")
        id_blank, title_blank = blank_mask(item), blank_mask(title)
        id_text = _text(item, id_blank)
        keys = pc.utf8_trim_whitespace(id_text)

        vectors = {c: parse_vectors(batch.column(c)) for c in self.dims}
        codes = {c: problems(vectors[c], self.dims[c], c in self.configured) for c in self.dims}
        bad = id_blank | title_blank
        for code in codes.values():
            bad |= code != OK
        duplicate_of = np.zeros(n, dtype=np.int64)
        remember = self._first_seen.setdefault
        for i, key in enumerate(keys.to_pylist()):
            if key is not None:
                first = remember(key, start + i + 1)
                if first != start + i + 1:
                    duplicate_of[i] = first
        bad |= duplicate_of > 0

        rejects: list[Reject] = []
        rejected = np.flatnonzero(bad)
        if len(rejected):
            records = batch.take(pa.array(rejected, pa.int64())).to_pylist()
            ids = id_text.take(pa.array(rejected, pa.int64())).to_pylist()
            for i, record, original_id in zip(rejected.tolist(), records, ids):
                text = self._reason(i, id_blank, title_blank, codes, vectors, duplicate_of, keys)
                self.reasons[text.split(":")[0]] += 1
                rejects.append(Reject(start + i + 1, original_id or "", text, _record(record)))

        if "category" in names:
            category_blank = blank_mask(batch.column("category"))
            category = pc.fill_null(_text(batch.column("category"), category_blank), self.default_category)
        else:
            category = pa.array([self.default_category] * n, pa.string())
        columns: list[pa.Array] = [keys, _text(title, title_blank), category]
        for column in ("description", "brand", "price"):
            # Price stays text: real feeds carry currencies ("69.71 gbp") and no step computes with it.
            columns.append(_text(batch.column(column), blank_mask(batch.column(column))) if column in names else pa.nulls(n, pa.string()))
        columns.extend(vectors[c].arrow() for c in self.dims)
        columns.extend(_text(batch.column(c), blank_mask(batch.column(c))) for c in self.attribute_columns)
        accepted = pa.RecordBatch.from_arrays(columns, schema=self.schema).filter(pa.array(~bad))

        if self.categories is not None:
            self._present.update(pc.unique(accepted.column("category")).to_pylist())
            in_scope = pc.is_in(accepted.column("category"), value_set=pa.array(self.categories, pa.string()))
            self.rows_out_of_scope += accepted.num_rows - pc.sum(in_scope).as_py() if accepted.num_rows else 0
            accepted = accepted.filter(in_scope)
        self._in_scope.update(pc.unique(accepted.column("category")).to_pylist())
        return accepted, rejects

    def _reason(
        self,
        i: int,
        id_blank: np.ndarray,
        title_blank: np.ndarray,
        codes: dict[str, np.ndarray],
        vectors: dict[str, Any],
        duplicate_of: np.ndarray,
        keys: pa.Array,
    ) -> str:
        if id_blank[i]:
            return "empty item_id: item_id is empty or NULL"
        if title_blank[i]:
            return "empty title: title is empty or NULL"
        for column, code in codes.items():
            if code[i] != OK:
                return reason(int(code[i]), column, int(vectors[column].lengths[i]), self.dims[column])
        return f"duplicate item_id: {keys[i].as_py()!r} first seen at row {duplicate_of[i]}"

    def finish(self) -> CatalogCounts:
        """The counts; fails when a requested category has no accepted row."""
        if self.categories is not None:
            unknown = [c for c in self.categories if c not in self._present]
            if unknown:
                raise CatalogError(f"requested categories not found in the catalog: {', '.join(unknown)}")
        rejected = sum(self.reasons.values())
        accepted = self.rows_read - rejected - self.rows_out_of_scope
        log.info(
            "catalog: %d rows read, %d accepted, %d rejected, %d out of scope", self.rows_read, accepted, rejected, self.rows_out_of_scope
        )
        return CatalogCounts(
            rows_read=self.rows_read,
            rows_rejected=rejected,
            rows_out_of_scope=self.rows_out_of_scope,
            reject_reasons=dict(sorted(self.reasons.items())),
            categories=tuple(sorted(self._in_scope)),
            attribute_columns=self.attribute_columns,
        )


class RejectsWriter:
    """Streams rejects to a CSV (row, item_id, reason, record) that appears atomically on a clean exit."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.count = 0

    def __enter__(self) -> RejectsWriter:
        self._target = storage.writing_file(self.uri)
        path = self._target.__enter__()
        self._handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in __exit__
        self._writer = csv.writer(self._handle, lineterminator="\n")
        self._writer.writerow(REJECT_COLUMNS)
        return self

    def write(self, rejects: list[Reject]) -> None:
        """Append rejects in file order."""
        self._writer.writerows((r.row, r.item_id, r.reason, r.record) for r in rejects)
        self.count += len(rejects)

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()
        self._target.__exit__(*exc)


def check_reject_fraction(load: CatalogCounts | CatalogLoad, max_fraction: float, rejects_uri: str) -> None:
    """Fail the run when too many rows were rejected; the rejects file is already written."""
    if load.rows_read == 0:
        raise CatalogError("catalog has no rows")
    fraction = load.rows_rejected / load.rows_read
    if fraction > max_fraction:
        raise RejectThresholdError(
            f"{load.rows_rejected} of {load.rows_read} rows rejected ({fraction:.2%}), above the limit "
            f"catalog.max_reject_fraction={max_fraction:.2%}; reasons: {load.reject_reasons}; see {rejects_uri}"
        )


# --- the whole catalog in memory: small catalogs, tests and training ------------------------------


@dataclass(frozen=True)
class CatalogLoad:
    """The accepted rows (normalised), the rejected rows with reasons, and the counts."""

    accepted: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    rows_out_of_scope: int
    attribute_columns: tuple[str, ...]

    @property
    def rows_rejected(self) -> int:
        return len(self.rejects)

    @property
    def reject_reasons(self) -> dict[str, int]:
        """Reject counts by reason kind (the text before the first colon)."""
        return dict(sorted(Counter(r.split(":")[0] for r in self.rejects["reason"]).items()))


def read_catalog(uri: str) -> pd.DataFrame:
    """Read a whole catalog into a frame: text (CSV) or native types (Parquet). For small catalogs only."""
    source = open_catalog(uri)
    batches = list(source.batches())
    if not batches:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in source.columns})
    return pa.Table.from_batches(batches).to_pandas()


def validate_catalog(
    frame: pd.DataFrame,
    config: AppConfig,
    *,
    categories: tuple[str, ...] | None = None,
) -> CatalogLoad:
    """Split a frame's rows into accepted and rejected, with the same checks as the streaming plan."""
    table = pa.Table.from_pandas(frame, preserve_index=False)

    def read(columns: Sequence[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        return iter(table.select(list(columns or table.column_names)).to_batches(max_chunksize=batch_rows))

    source = CatalogSource("<frame>", tuple(table.column_names), read)
    validator = CatalogValidator(source, config, categories=categories)
    accepted: list[pa.RecordBatch] = []
    rejects: list[Reject] = []
    for batch in source.batches():
        good, bad = validator.validate(batch)
        accepted.append(good)
        rejects.extend(bad)
    counts = validator.finish()
    table = pa.Table.from_batches(accepted, schema=validator.schema)
    data: dict[str, list[Any]] = {}
    for name in table.column_names:
        column = table.column(name)
        if name in validator.dims:
            data[name] = [None if v is None else np.asarray(v, dtype=np.float32) for v in column.to_pylist()]
        else:
            data[name] = column.to_pylist()
    rejected = pd.DataFrame([(r.row, r.item_id, r.reason, r.record) for r in rejects], columns=list(REJECT_COLUMNS))
    return CatalogLoad(
        pd.DataFrame(data, columns=table.column_names), rejected, counts.rows_read, counts.rows_out_of_scope, counts.attribute_columns
    )
