"""Catalog input contract: stream CSV or Parquet in batches, validate every row, keep bad rows with their reason.

Nothing here holds the whole catalog: rows arrive as Arrow record batches (CSV blocks or Parquet row
groups) and are checked column-wise. The one catalog-wide state is the map of item ids seen so far,
which duplicate detection needs.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops.catalog.cells import (
    as_text,
    check_utf8,
    first_control,
    has_control,
    has_control_repeated,
    ids_as_text,
    text_type_problem,
)
from pss_ops.catalog.rejects import REJECT_COLUMNS, Reject
from pss_ops.catalog.source import BATCH_ROWS, REQUIRED_COLUMNS, CatalogError, CatalogSource, open_catalog
from pss_ops.catalog.vectors import OK, blank_mask, parse_vectors, problems, reason
from pss_ops.config import VECTOR_COLUMNS, AppConfig, TextField
from pss_ops.features.coverage import FeatureCoverage, visible_mask

log = logging.getLogger(__name__)

OPTIONAL_TEXT_COLUMNS = ("category", "description", "brand", "price")
# The catalog columns a text feature or lexical retriever may read.
TEXT_FIELDS: tuple[str, ...] = get_args(TextField)
CATEGORIES_SHOWN = 20


class RejectThresholdError(CatalogError):
    """More rows were rejected than the configured fraction allows."""


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
                raise CatalogError(
                    f"catalog {source.uri} is missing column {column!r} required by the config's precomputed feature or vector retriever"
                )
        for attribute in config.filter_attributes:
            if attribute not in source.columns and attribute != "category":
                raise CatalogError(f"catalog {source.uri} is missing column {attribute!r} used by post_filter")
        self.dims = _expected_dims(source, config, batch_rows)
        reserved = (*REQUIRED_COLUMNS, *OPTIONAL_TEXT_COLUMNS, *VECTOR_COLUMNS)
        self.attribute_columns = tuple(c for c in source.columns if c not in reserved)
        self.default_category = config.catalog.default_category
        self.uri = source.uri
        self.coverage = FeatureCoverage(config)
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

    def _check_columns(self, batch: pa.RecordBatch, start: int) -> None:
        """Text columns must have one text form per cell: a list or a struct would be stored as Python's repr."""
        for field in batch.schema:
            if field.name not in self.dims and text_type_problem(field.type):
                raise CatalogError(f"catalog {self.uri}: column {field.name!r} has type {field.type}; it must be text")
        check_utf8(self.uri, batch, start)

    def validate(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[Reject]]:
        """The batch's accepted in-scope rows in the partition schema, and its rejects."""
        n, start = batch.num_rows, self.rows_read
        self._check_columns(batch, start)
        self.rows_read += n
        names = batch.schema.names
        item, title = batch.column("item_id"), batch.column("title")
        id_text, float_id = ids_as_text(item, blank_mask(item))
        keys = pc.utf8_trim_whitespace(id_text)
        title_text = as_text(title, blank_mask(title))
        if "category" in names:
            category = pc.fill_null(as_text(batch.column("category"), blank_mask(batch.column("category"))), self.default_category)
        else:
            category = pa.array([self.default_category] * n, pa.string())
        flags = {
            "empty item_id": ~visible_mask(keys),
            "bad item_id": float_id | has_control(keys),
            "empty title": ~visible_mask(title_text),
            "bad category": has_control_repeated(category),
        }
        vectors = {c: parse_vectors(batch.column(c)) for c in self.dims}
        codes = {c: problems(vectors[c], self.dims[c], c in self.configured) for c in self.dims}
        bad = np.zeros(n, dtype=bool)
        for flag in flags.values():
            bad |= flag
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

        columns: list[pa.Array] = [keys, title_text, category]
        for column in ("description", "brand", "price"):
            # Price stays text: real feeds carry currencies ("69.71 gbp") and no step computes with it.
            columns.append(as_text(batch.column(column), blank_mask(batch.column(column))) if column in names else pa.nulls(n, pa.string()))
        columns.extend(vectors[c].arrow() for c in self.dims)
        columns.extend(as_text(batch.column(c), blank_mask(batch.column(c))) for c in self.attribute_columns)
        table = pa.RecordBatch.from_arrays(columns, schema=self.schema)

        # Last, on the rows every other check accepts, and on their text as the embed step will read it.
        no_features = np.zeros(n, dtype=bool)
        candidates = table.filter(pa.array(~bad)) if bad.any() else table
        no_features[~bad] = self.coverage.uncovered({f: candidates.column(f) for f in TEXT_FIELDS})
        bad |= no_features

        rejects: list[Reject] = []
        rejected = np.flatnonzero(bad)
        if len(rejected):
            records = batch.take(pa.array(rejected, pa.int64())).to_pylist()
            texts = pa.table({"id": id_text, "key": keys, "title": title_text, "category": category}).take(pa.array(rejected, pa.int64()))
            for i, record, row in zip(rejected.tolist(), records, texts.to_pylist()):
                kind = next((k for k, flag in flags.items() if flag[i]), None)
                if kind is not None:
                    text = self._flag_reason(kind, row, bool(float_id[i]))
                elif any(code[i] != OK for code in codes.values()):
                    column = next(c for c, code in codes.items() if code[i] != OK)
                    text = reason(int(codes[column][i]), column, vectors[column].row(i), self.dims[column])
                elif duplicate_of[i]:
                    text = f"duplicate item_id: {row['key']!r} first seen at row {duplicate_of[i]}"
                else:
                    text = self.coverage.reason(row["title"])
                self.reasons[text.split(":")[0]] += 1
                rejects.append(Reject(start + i + 1, row["id"] or "", text, _record(record)))

        accepted = table.filter(pa.array(~bad))
        if self.categories is not None:
            self._present.update(pc.unique(accepted.column("category")).to_pylist())
            in_scope = pc.is_in(accepted.column("category"), value_set=pa.array(self.categories, pa.string()))
            self.rows_out_of_scope += accepted.num_rows - pc.sum(in_scope).as_py() if accepted.num_rows else 0
            accepted = accepted.filter(in_scope)
        self._in_scope.update(pc.unique(accepted.column("category")).to_pylist())
        return accepted, rejects

    @staticmethod
    def _flag_reason(kind: str, row: dict[str, Any], float_id: bool) -> str:
        if kind == "empty item_id":
            if row["id"] is None:
                return "empty item_id: item_id is empty or NULL"
            return f"empty item_id: item_id {row['id']!r} has no visible character"
        if kind == "bad item_id":
            if float_id:
                return f"bad item_id: item_id {row['id']} is a float, not an integer of at most 2**53; ids must be stored as text"
            return f"bad item_id: item_id {row['key']!r} contains the control character {first_control(row['key'])}"
        if kind == "empty title":
            if row["title"] is None:
                return "empty title: title is empty or NULL"
            return f"empty title: title {row['title']!r} has no visible character"
        return f"bad category: category {row['category']!r} contains the control character {first_control(row['category'])}"

    def finish(self) -> CatalogCounts:
        """The counts; fails when a requested category has no accepted row."""
        if self.categories is not None:
            unknown = [c for c in self.categories if c not in self._present]
            if unknown:
                present = sorted(self._present)
                shown = ", ".join(present[:CATEGORIES_SHOWN]) + (", ..." if len(present) > CATEGORIES_SHOWN else "")
                raise CatalogError(
                    f"requested categories not found in the catalog {self.uri}: {', '.join(unknown)}; "
                    f"it has {len(present)} categories with accepted rows: {shown or 'none'}"
                )
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


def check_reject_fraction(
    load: CatalogCounts | CatalogLoad, max_fraction: float, rejects_uri: str, *, catalog_uri: str | None = None
) -> None:
    """Fail the run when too many rows were rejected; the rejects file is already written."""
    catalog = f"catalog {catalog_uri}" if catalog_uri else "catalog"
    if load.rows_read == 0:
        raise CatalogError(f"{catalog} has no rows")
    fraction = load.rows_rejected / load.rows_read
    if fraction > max_fraction:
        raise RejectThresholdError(
            f"{catalog}: {load.rows_rejected} of {load.rows_read} rows rejected ({fraction:.2%}), above the limit "
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
    start = 0
    for batch in batches:
        check_utf8(uri, batch, start)
        start += batch.num_rows
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
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        # A column mixing numbers and strings: pyarrow's message names it.
        raise CatalogError(f"catalog frame cannot be read as columns of one type: {err}") from None

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
