"""Catalog files opened for streaming: CSV (.csv, .csv.gz) or Parquet, read as Arrow record batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pss_ops import storage

REQUIRED_COLUMNS = ("item_id", "title")
BATCH_ROWS = 65_536  # rows validated at a time: bounds the plan step's memory, not its result
CSV_BLOCK_BYTES = 16 << 20  # CSV read unit; one row must fit in it

Batches = Callable[[Sequence[str] | None, int], Iterator[pa.RecordBatch]]


class CatalogError(ValueError):
    """The catalog cannot be used at all (format, missing column, unknown category)."""


@dataclass(frozen=True)
class CatalogSource:
    """A catalog opened for streaming: its column names and a batch reader (optionally a column subset)."""

    uri: str
    columns: tuple[str, ...]
    read: Batches = field(repr=False)

    def batches(self, columns: Sequence[str] | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Record batches of at most batch_rows rows, in file order."""
        for batch in self.read(columns, batch_rows):
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)


def _csv_reader(uri: str, names: Sequence[str] | None, columns: Sequence[str] | None, block_bytes: int) -> Any:
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(
        # Every cell is text, and an empty cell is "" (not NULL), as in the CSV contract.
        column_types={name: pa.string() for name in names} if names is not None else None,
        strings_can_be_null=False,
        include_columns=list(columns) if columns is not None else None,
    )
    try:
        return pacsv.open_csv(
            storage.open_input_stream(uri),
            read_options=pacsv.ReadOptions(block_size=block_bytes),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=convert,
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise CatalogError(f"catalog {uri} is not readable CSV: {err}") from None


def _open_csv(uri: str, block_bytes: int) -> CatalogSource:
    names = tuple(_csv_reader(uri, None, None, block_bytes).schema.names)

    def read(columns: Sequence[str] | None, _: int) -> Iterator[pa.RecordBatch]:
        reader = _csv_reader(uri, names, columns, block_bytes)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as err:
                raise CatalogError(f"catalog {uri} is not readable CSV: {err}") from None
            yield batch

    return CatalogSource(uri, names, read)


def _open_parquet(uri: str) -> CatalogSource:
    try:
        # Random access by row group through the URI layer, local or on S3: neither memory nor disk holds the file.
        names = tuple(storage.open_parquet(uri).schema_arrow.names)
    except (pa.ArrowInvalid, OSError) as err:
        raise CatalogError(f"catalog {uri} is not readable Parquet: {err}") from None

    def read(columns: Sequence[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        yield from storage.open_parquet(uri).iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None)

    return CatalogSource(uri, names, read)


def open_catalog(uri: str, *, csv_block_bytes: int | None = None) -> CatalogSource:
    """Open a CSV (.csv, .csv.gz) or Parquet catalog for streaming; the required columns must be there."""
    lowered = uri.lower()
    if lowered.endswith((".parquet", ".pq")):
        source = _open_parquet(uri)
    elif lowered.endswith((".csv", ".csv.gz")):
        source = _open_csv(uri, csv_block_bytes or CSV_BLOCK_BYTES)
    else:
        raise CatalogError(f"catalog {uri}: unsupported format; use .csv, .csv.gz or .parquet")
    missing = [c for c in REQUIRED_COLUMNS if c not in source.columns]
    if missing:
        raise CatalogError(
            f"catalog {uri} is missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"found columns: {', '.join(map(str, source.columns))}"
        )
    return source
