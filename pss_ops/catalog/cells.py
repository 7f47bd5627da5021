"""Text cells of a catalog batch: typed columns as text, ids, and the characters a warehouse cannot store."""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pss_ops.catalog.source import CatalogError

# Integers above this are not all representable in float64, so a float id beyond it may not be the id written.
_EXACT_FLOAT_INTEGER = 2**53
# C0 and C1 control characters: PostgreSQL refuses NUL in text, and none belongs in an id or a category.
_CONTROL = r"\p{Cc}"


def text_type_problem(kind: pa.DataType) -> bool:
    """True for Arrow types that have no one text form: nested, binary, temporal and the rest."""
    if pa.types.is_dictionary(kind):
        return text_type_problem(kind.value_type)
    return not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_floating(kind)
    )


def _float_text(array: pa.Array) -> list[str | None]:
    """Floats as their shortest round-tripping text in their own width ("0.1" for a float32 0.1, not 0.10000000149)."""
    values = array.to_numpy(zero_copy_only=False)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return [str(v) if ok else None for v, ok in zip(values, valid)]


def as_text(array: pa.Array, blank: np.ndarray) -> pa.Array:
    """Cells as text, NULL where blank: strings as they are, integers, decimals and booleans cast, floats shortest."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_floating(array.type):
        text = pa.array(_float_text(array), pa.string())
    elif pa.types.is_null(array.type):
        text = pa.nulls(len(array), pa.string())
    else:
        text = pc.cast(array, pa.string())
    return pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), text)


def ids_as_text(array: pa.Array, blank: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Ids as text, and which rows hold a float id that is no integer (those are rejected; their text names them)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if not pa.types.is_floating(array.type):
        return as_text(array, blank), np.zeros(len(array), dtype=bool)
    # A numeric id column read through pandas, or written by a tool that guessed numbers, arrives as floats:
    # 12345.0 is the id "12345" exactly when the float is an integer float64 holds exactly.
    values = np.asarray(pc.fill_null(array.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False))
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(values) & (np.abs(values) <= _EXACT_FLOAT_INTEGER) & (np.floor(values) == values)
    whole = pc.cast(pa.array(np.where(integral, values, 0).astype(np.int64)), pa.string())
    text = pc.if_else(pa.array(integral), whole, pa.array(_float_text(array), pa.string()))
    return pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), text), ~integral & ~blank


def has_control(array: pa.Array) -> np.ndarray:
    """Per text cell: does it hold a control character (NUL, tab, newline, U+0080..U+009F); NULL does not."""
    return np.asarray(pc.fill_null(pc.match_substring_regex(array, _CONTROL), False).to_numpy(zero_copy_only=False), dtype=bool)


def has_control_repeated(array: pa.Array) -> np.ndarray:
    """has_control for a column of few distinct values (categories), each checked once."""
    encoded = pc.dictionary_encode(array)
    return has_control(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]


def first_control(text: str) -> str:
    """The first control character of a text, named as U+0000."""
    found = next(c for c in text if unicodedata.category(c) == "Cc")
    return f"U+{ord(found):04X}"


def first_invalid_utf8(array: pa.Array) -> tuple[int, bytes] | None:
    """The first string cell that is not UTF-8 (0-based) and its undecodable bytes; None when every one is.

    Parquet does not enforce UTF-8 in string columns, and a bad byte would otherwise surface as a bare
    UnicodeDecodeError, or reach the warehouse.
    """
    if pa.types.is_dictionary(array.type):
        found = first_invalid_utf8(array.dictionary)
        if found is None:
            return None
        rows = np.flatnonzero(pc.fill_null(pc.equal(array.indices, found[0]), False).to_numpy(zero_copy_only=False))
        return (int(rows[0]), found[1]) if len(rows) else None
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type)):
        return None
    try:
        array.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    as_bytes = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary(), pa.string_view(): pa.binary_view()}[array.type]
    for row, value in enumerate(array.view(as_bytes).to_pylist()):
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as err:
            return row, value[err.start : err.end]
    return None


def check_utf8(uri: str, batch: pa.RecordBatch, start: int) -> None:
    """Fail on the first string cell that is not UTF-8, naming its row (start rows precede the batch) and column."""
    for name, array in zip(batch.schema.names, batch.columns):
        invalid = first_invalid_utf8(array)
        if invalid is not None:
            row, undecodable = invalid
            raise CatalogError(
                f"catalog {uri}: row {start + row + 1}, column {name!r} is not valid UTF-8 "
                f"(bytes {' '.join(f'0x{b:02x}' for b in undecodable)})"
            )
