"""Catalog files opened for streaming: CSV (.csv, .csv.gz) or Parquet, read as Arrow record batches."""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pss_ops import storage

REQUIRED_COLUMNS = ("item_id", "title")
BATCH_ROWS = 65_536  # rows validated at a time: bounds the plan step's memory, not its result
CSV_BLOCK_BYTES = 16 << 20  # CSV read unit; one row must fit in it

Batches = Callable[[Sequence[str] | None, int], Iterator[pa.RecordBatch]]

# pyarrow's conversion error names the column by its 0-based position only.
_CSV_UTF8_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error to string: invalid UTF8 data")


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


def _one_line(err: Exception) -> str:
    """An Arrow or OS error's text on one line: Parquet's thrift errors span several."""
    return " ".join(str(err).split())


def _unreadable(uri: str, err: OSError, kind: str) -> CatalogError:
    """An OSError reading the catalog as one sentence: no such file, a folder, S3 (credentials, bucket), or corrupt bytes."""
    if storage.is_s3(uri):
        return CatalogError(f"cannot read catalog {uri}: {_one_line(err)}")
    if os.path.isdir(uri):
        return CatalogError(f"catalog {uri} is a folder; give one .csv, .csv.gz or .parquet file")
    if not os.path.exists(uri):
        return CatalogError(f"catalog {uri} not found")
    return CatalogError(f"catalog {uri} is not readable {kind}: {_one_line(err)}")


def _invalid_utf8(uri: str, names: Sequence[str] | None, err: pa.ArrowInvalid) -> CatalogError | None:
    """pyarrow's invalid-UTF-8 error with the data row and column it happened in, found by reading the file again."""
    match = _CSV_UTF8_ERROR.search(str(err))
    if match is None:
        return None
    position = int(match.group(1))
    column = names[position] if names is not None and position < len(names) else f"#{position + 1}"
    # Only on this error path: the csv module over the same bytes, undecodable ones kept as lone surrogates.
    try:
        with storage.open_input_stream(uri) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
            for row, cells in enumerate(csv.reader(text)):
                found = next((cell for cell in cells[position : position + 1] if _undecodable(cell)), None)
                if found is None:
                    continue
                where = "the header" if row == 0 else f"row {row}"
                return CatalogError(f"catalog {uri}: {where}, column {column!r} is not valid UTF-8 (bytes {_undecodable(found)})")
    except csv.Error:
        pass  # a cell beyond the csv module's size limit, which pyarrow reads: the column alone is named
    return CatalogError(f"catalog {uri}: column {column!r} is not valid UTF-8")


def _undecodable(cell: str) -> str:
    """The undecodable bytes of a surrogateescape-decoded cell, as hex ("0xff 0xfe"); "" when there are none."""
    return " ".join(f"0x{ord(c) - 0xDC00:02x}" for c in cell if "\udc80" <= c <= "\udcff")


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
    except pa.ArrowInvalid as err:
        raise _invalid_utf8(uri, names, err) or CatalogError(f"catalog {uri} is not readable CSV: {_one_line(err)}") from None
    except OSError as err:
        raise _unreadable(uri, err, "CSV") from None


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
                raise _invalid_utf8(uri, names, err) or CatalogError(f"catalog {uri} is not readable CSV: {_one_line(err)}") from None
            except OSError as err:
                # A corrupt .gz is found while streaming; zlib's complaint is the reason.
                raise _unreadable(uri, err, "CSV") from None
            yield batch

    return CatalogSource(uri, names, read)


def _open_parquet(uri: str) -> CatalogSource:
    try:
        # Random access by row group through the URI layer, local or on S3: neither memory nor disk holds the file.
        with storage.open_parquet(uri) as opened:
            names = tuple(opened.schema_arrow.names)
            groups = opened.metadata.num_row_groups
    except pa.ArrowInvalid as err:
        reason = _one_line(err).removeprefix(f"{uri}: ")  # storage names the file; this message already does
        raise CatalogError(f"catalog {uri} is not readable Parquet: {reason}") from None
    except OSError as err:
        raise _unreadable(uri, err, "Parquet") from None

    def read(columns: Sequence[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # Row group by row group, so a corrupt page is reported with the rows it holds.
        selected = list(columns) if columns else None
        first = 1
        with storage.open_parquet(uri) as file:
            for group in range(groups):
                rows = file.metadata.row_group(group).num_rows
                try:
                    yield from file.iter_batches(batch_size=batch_rows, row_groups=[group], columns=selected)
                except (pa.ArrowException, OSError) as err:
                    raise CatalogError(
                        f"catalog {uri} is not readable Parquet: row group {group + 1} of {groups} "
                        f"(data rows {first}-{first + rows - 1}): {_one_line(err)}"
                    ) from None
                first += rows

    return CatalogSource(uri, names, read)


def _repeated(names: Sequence[str]) -> list[str]:
    return [name for name, count in Counter(names).items() if count > 1]


def open_catalog(uri: str, *, csv_block_bytes: int | None = None) -> CatalogSource:
    """Open a CSV (.csv, .csv.gz) or Parquet catalog for streaming; the required columns must be there, each once."""
    lowered = uri.lower()
    if lowered.endswith((".parquet", ".pq")):
        source = _open_parquet(uri)
    elif lowered.endswith((".csv", ".csv.gz")):
        source = _open_csv(uri, csv_block_bytes or CSV_BLOCK_BYTES)
    else:
        raise CatalogError(f"catalog {uri}: unsupported format; use .csv, .csv.gz or .parquet")
    repeated = _repeated(source.columns)
    if repeated:
        # pyarrow would keep one of the copies silently (CSV) or return both under one name (Parquet).
        raise CatalogError(
            f"catalog {uri} has duplicate column name(s) {', '.join(repr(c) for c in repeated)}; each column must appear once"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in source.columns]
    if missing:
        raise CatalogError(
            f"catalog {uri} is missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"found columns: {', '.join(map(str, source.columns))}"
        )
    return source
