"""Vector cells of a catalog batch, checked column-wise with Arrow and numpy (JSON text or list columns)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Problem codes, in the order a cell is checked; the first that applies is the cell's problem. Values are
# checked as the float32 every embedding step computes with: a finite 1e39 becomes inf (OUT_OF_RANGE), 1e-50
# becomes 0 (ZERO when every value does), and a vector whose float32 L2 norm is inf (1e20 squared) or 0 (1e-30
# squared) cannot be normalised (OUT_OF_RANGE, judged after ZERO).
OK, BAD, MISSING, WRONG_LENGTH, NON_FINITE, OUT_OF_RANGE, ZERO = range(7)
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_JSON_SPACE = " \t\n\r"
_FLAT_LIST = r"^\[[^\[\]]*\]$"
# A JSON number, or the constants Python's json module also accepts.
_NUMBER = r"^(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|NaN|-?Infinity)$"


def blank_mask(array: pa.Array) -> np.ndarray:
    """NULL, NaN or whitespace-only cells."""
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    if pa.types.is_null(array.type):
        return np.ones(len(array), dtype=bool)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string_view(array.type):
        array = array.cast(pa.string())
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        empty = pc.equal(pc.utf8_trim_whitespace(array), "")
        return np.asarray(pc.fill_null(empty, True).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_floating(array.type):
        return np.asarray(pc.fill_null(pc.is_nan(array), True).to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def python_vector(value: Any) -> np.ndarray:
    """One non-blank cell as float64; ValueError/TypeError when it is not a flat list of numbers."""
    if isinstance(value, str):
        value = json.loads(value)
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError("not a flat list")
    return array


@dataclass(frozen=True)
class ParsedVectors:
    """A column's cells as one flat float buffer with row offsets; unparseable and blank rows are empty."""

    bad: np.ndarray
    blank: np.ndarray
    offsets: np.ndarray
    values: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, index: int) -> np.ndarray:
        """One row's values as parsed (empty when blank or unparseable)."""
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def arrow(self) -> pa.ListArray:
        """list<float32>, NULL where the cell was blank or unparseable."""
        return pa.ListArray.from_arrays(
            pa.array(self.offsets, pa.int32()),
            pa.array(_float32(self.values)),
            mask=pa.array(self.blank | self.bad),
        )


def _from_rows(rows: list[np.ndarray | None], bad: np.ndarray, blank: np.ndarray) -> ParsedVectors:
    lengths = np.array([0 if r is None else len(r) for r in rows], dtype=np.int64)
    kept = [r for r in rows if r is not None and len(r)]
    values = np.concatenate(kept) if kept else np.zeros(0, np.float64)
    return ParsedVectors(bad, blank, np.concatenate([[0], np.cumsum(lengths)]), values)


def _python_rows(array: pa.Array, blank: np.ndarray) -> ParsedVectors:
    """The general path, one cell at a time: unusual types and text the fast path does not recognise."""
    bad = np.zeros(len(array), dtype=bool)
    rows: list[np.ndarray | None] = []
    for i, value in enumerate(array.to_pylist()):
        if blank[i]:
            rows.append(None)
            continue
        try:
            rows.append(python_vector(value))
        except (ValueError, TypeError, json.JSONDecodeError):
            bad[i] = True
            rows.append(None)
    return _from_rows(rows, bad, blank)


def _numeric_lists(array: pa.Array, blank: np.ndarray) -> ParsedVectors:
    if not pa.types.is_list(array.type):
        array = array.cast(pa.list_(array.type.value_type))
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = array.flatten()
    # float32 widens to float64 exactly, so float32 lists are checked as they are (no cast, half the memory).
    kind = pa.float32() if pa.types.is_float32(flat.type) else pa.float64()
    values = pc.cast(flat, kind).to_numpy(zero_copy_only=False)
    return ParsedVectors(np.zeros(len(array), dtype=bool), blank, np.concatenate([[0], np.cumsum(lengths)]), values)


def _json_text(array: pa.Array, blank: np.ndarray) -> ParsedVectors:
    """JSON lists of numbers parsed by Arrow; any row it does not recognise goes through json.loads."""
    text = pc.utf8_trim(array, _JSON_SPACE)
    shaped = pc.fill_null(pc.match_substring_regex(text, _FLAT_LIST), False).to_numpy(zero_copy_only=False) & ~blank
    candidates = np.flatnonzero(shaped)
    parts = pc.split_pattern(pc.utf8_slice_codeunits(text.take(pa.array(candidates, pa.int64())), 1, -1), ",")
    elements = pc.utf8_trim(parts.flatten(), _JSON_SPACE)
    number = pc.match_substring_regex(elements, _NUMBER).to_numpy(zero_copy_only=False)
    owner = pc.list_parent_indices(parts).to_numpy()
    wrong = np.bincount(owner[~number], minlength=len(candidates)) > 0
    fast = candidates[~wrong]
    try:
        values = pc.cast(elements.filter(pa.array(~wrong[owner])), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _python_rows(array, blank)
    fast_lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False).astype(np.int64)[~wrong]
    slow = np.flatnonzero(~blank & ~np.isin(np.arange(len(array)), fast))
    if len(slow) == 0:
        lengths = np.zeros(len(array), dtype=np.int64)
        lengths[fast] = fast_lengths
        return ParsedVectors(np.zeros(len(array), dtype=bool), blank, np.concatenate([[0], np.cumsum(lengths)]), values)
    # Rare: rebuild row by row only where the slow rows interleave with the fast ones.
    rows: list[np.ndarray | None] = [None] * len(array)
    starts = np.concatenate([[0], np.cumsum(fast_lengths)])
    for j, row in enumerate(fast):
        rows[row] = values[starts[j] : starts[j + 1]]
    slow_parsed = _python_rows(array.take(pa.array(slow, pa.int64())), np.zeros(len(slow), dtype=bool))
    bad = np.zeros(len(array), dtype=bool)
    bad[slow] = slow_parsed.bad
    for j, row in enumerate(slow):
        if not slow_parsed.bad[j]:
            rows[row] = slow_parsed.values[slow_parsed.offsets[j] : slow_parsed.offsets[j + 1]]
    return _from_rows(rows, bad, blank)


def parse_vectors(array: pa.Array) -> ParsedVectors:
    """Parse one vector column of a batch: list columns directly, JSON text fast, anything else per cell."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    blank = blank_mask(array) if not _is_list(array.type) else np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if _is_list(array.type) and (pa.types.is_integer(array.type.value_type) or pa.types.is_floating(array.type.value_type)):
        return _numeric_lists(array, blank)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return _json_text(pc.cast(array, pa.string()), blank)
    return _python_rows(array, blank)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


@dataclass(frozen=True)
class RowFlags:
    """Per row, what its vector holds once it is the float32 the features and retrievers compute with."""

    non_finite: np.ndarray  # a NaN or inf as given
    overflows: np.ndarray  # a finite value beyond float32's range, which becomes inf
    nonzero: np.ndarray  # a value that is still non-zero in float32 (1e-50 is not)
    unnormalisable: np.ndarray  # an L2 norm that is inf or 0 in float32, so normalising gives no unit vector


def _float32(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        return values.astype(np.float32, copy=False)


def _bad_norms(block: np.ndarray) -> np.ndarray:
    """Rows of a float32 (rows, width) block whose norm, computed as features.normalise does, is inf or 0."""
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(block, axis=-1)
    return ~np.isfinite(norms) | (norms == 0)


def _row_flags(values: np.ndarray, lengths: np.ndarray) -> RowFlags:
    """The flags of every row, column-wise: no Python per row."""
    n = len(lengths)
    width = int(lengths.max()) if n else 0
    filled = lengths == width
    single = _float32(values)
    flags = RowFlags(*(np.zeros(n, dtype=bool) for _ in range(4)))
    if width and np.all(filled | (lengths == 0)):
        # The usual case, one width: (rows, width) views instead of a per-value row index.
        block, block32 = values.reshape(-1, width), single.reshape(-1, width)
        finite = np.isfinite(block).all(axis=1)
        flags.non_finite[filled] = ~finite
        flags.overflows[filled] = finite & ~np.isfinite(block32).all(axis=1)
        flags.nonzero[filled] = block32.any(axis=1)
        flags.unnormalisable[filled] = _bad_norms(block32)
        return flags
    owner = np.repeat(np.arange(n), lengths)
    finite = np.isfinite(values)
    flags.non_finite[:] = np.bincount(owner[~finite], minlength=n) > 0
    flags.overflows[:] = ~flags.non_finite & (np.bincount(owner[finite & ~np.isfinite(single)], minlength=n) > 0)
    flags.nonzero[:] = np.bincount(owner[single != 0], minlength=n) > 0
    # Norms row by row of one width at a time, each block laid out as the embedding steps lay it out.
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    for row_width in np.unique(lengths[lengths > 0]).tolist():
        rows = np.flatnonzero(lengths == row_width)
        flags.unnormalisable[rows] = _bad_norms(single[starts[rows][:, None] + np.arange(row_width)])
    return flags


def problems(parsed: ParsedVectors, expected: int | None, required: bool) -> np.ndarray:
    """Per row, the first problem code of the cell (OK when none)."""
    n = len(parsed.blank)
    lengths = parsed.lengths
    code = np.full(n, OK, dtype=np.int8)
    code[parsed.bad] = BAD
    if required:
        code[parsed.blank & ~parsed.bad] = MISSING
    shaped = ~parsed.bad & ~parsed.blank
    if expected is not None:
        wrong = shaped & (lengths != expected)
        code[wrong] = WRONG_LENGTH
        shaped &= ~wrong
    flags = _row_flags(parsed.values, lengths)
    code[shaped & flags.non_finite] = NON_FINITE
    shaped &= ~flags.non_finite
    code[shaped & flags.overflows] = OUT_OF_RANGE
    shaped &= ~flags.overflows
    code[shaped & ~flags.nonzero] = ZERO
    code[shaped & flags.nonzero & flags.unnormalisable] = OUT_OF_RANGE
    return code


def reason(code: int, column: str, vector: np.ndarray, expected: int | None) -> str:
    """The reject reason text for a problem code (the kind before the colon), from the row's vector as parsed."""
    if code == BAD:
        return f"bad vector: {column} is not a list of numbers"
    if code == MISSING:
        return f"missing vector: {column} is empty"
    if code == WRONG_LENGTH:
        return f"wrong vector length: {column} has {len(vector)} values, expected {expected}"
    if code == NON_FINITE:
        return f"non-finite vector: {column} contains NaN or inf"
    magnitudes = np.abs(vector)
    largest = float(vector[np.argmax(magnitudes)]) if len(vector) else 0.0
    if code == OUT_OF_RANGE:
        single = _float32(vector)[None, :]
        if not np.isfinite(single).all():
            return f"vector out of float32 range: column {column} has {largest:g}, beyond ±{_FLOAT32_MAX:.2g}"
        with np.errstate(over="ignore", under="ignore"):
            norm = np.linalg.norm(single, axis=-1)[0]
        if not np.isfinite(norm):
            return f"vector out of float32 range: column {column} has {largest:g}, and its L2 norm overflows float32"
        return f"vector out of float32 range: column {column}'s largest value is {largest:g}, and its L2 norm underflows to 0 in float32"
    if largest:
        return f"zero vector: {column} is all zeros as float32 (its largest value is {largest:g}) and has no direction"
    return f"zero vector: {column} is all zeros and has no direction"
