"""Labelled training pairs: the PairSet record, its fingerprint, reading pairs CSVs and parsing pair sources."""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pss_ops import storage

POSITIVE = 1
NEGATIVE = 0
# The task of a pair source that names none (`pss train --pairs matches.csv`).
DEFAULT_TASK = "labelled"
# A task name holds no ':', '/' or whitespace, so the text after a URI's last colon is a task only when it fits.
_TASK_NAME = r"[^:/\s]+"
# A pair source with an explicit task, as a JSON-schema pattern (the training DAG's `pairs` param).
PAIR_SOURCE_PATTERN = rf"^.+:{_TASK_NAME}$"


@dataclass(frozen=True, eq=False)
class PairSet:
    """One task's labelled pairs: id_a, id_b (str object arrays) and label (int8, 1 similar, 0 dissimilar)."""

    task: str
    id_a: np.ndarray
    id_b: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("a PairSet needs a non-empty task name")
        id_a = _id_array(self.id_a)
        id_b = _id_array(self.id_b)
        label = np.asarray(self.label)
        if not (len(id_a) == len(id_b) == len(label)) or label.ndim != 1:
            raise ValueError(
                f"task {self.task!r}: id_a, id_b and label must be 1-d of one length, got {len(id_a)}, {len(id_b)}, {label.shape}"
            )
        if len(label) and not np.isin(label, (NEGATIVE, POSITIVE)).all():
            bad = label[~np.isin(label, (NEGATIVE, POSITIVE))][0]
            raise ValueError(f"task {self.task!r}: labels must be 0 or 1, got {bad!r}")
        object.__setattr__(self, "id_a", id_a)
        object.__setattr__(self, "id_b", id_b)
        object.__setattr__(self, "label", label.astype(np.int8))

    @classmethod
    def empty(cls, task: str) -> PairSet:
        """A task with no pairs."""
        return cls(task, np.empty(0, dtype=object), np.empty(0, dtype=object), np.empty(0, dtype=np.int8))

    @classmethod
    def from_rows(cls, task: str, rows: Iterable[tuple[str, str, int]]) -> PairSet:
        """Pairs from (id_a, id_b, label) tuples."""
        rows = list(rows)
        if not rows:
            return cls.empty(task)
        a, b, y = zip(*rows)
        return cls(task, np.asarray(a, dtype=object), np.asarray(b, dtype=object), np.asarray(y, dtype=np.int8))

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray) -> PairSet:
        """The pairs selected by a boolean mask or an index array, in that order."""
        return PairSet(self.task, self.id_a[rows], self.id_b[rows], self.label[rows])

    def concat(self, *others: PairSet) -> PairSet:
        """This task's pairs followed by the others' (which must be of the same task)."""
        for other in others:
            if other.task != self.task:
                raise ValueError(f"cannot concatenate pairs of task {other.task!r} to task {self.task!r}")
        parts = (self, *others)
        return PairSet(
            self.task,
            np.concatenate([p.id_a for p in parts]),
            np.concatenate([p.id_b for p in parts]),
            np.concatenate([p.label for p in parts]),
        )

    @property
    def positives(self) -> PairSet:
        """The similar pairs."""
        return self.take(self.label == POSITIVE)

    @property
    def negatives(self) -> PairSet:
        """The dissimilar pairs."""
        return self.take(self.label == NEGATIVE)

    def rows(self) -> list[tuple[str, str, str, int]]:
        """(task, id_a, id_b, label) tuples, in order."""
        return [(self.task, a, b, int(y)) for a, b, y in zip(self.id_a.tolist(), self.id_b.tolist(), self.label.tolist())]

    def fingerprint(self) -> str:
        """sha256 hex of the sorted (task, id_a, id_b, label) rows: independent of row order."""
        return pairs_fingerprint([self])


def pairs_fingerprint(pair_sets: Iterable[PairSet]) -> str:
    """sha256 hex over the sorted (task, id_a, id_b, label) rows of all the sets (the spec's training_data)."""
    rows = sorted(row for pairs in pair_sets for row in pairs.rows())
    digest = hashlib.sha256(b"pairs/v1\n")
    for task, a, b, y in rows:
        # Length-prefixed fields: no id can forge a row boundary, whatever characters it holds.
        for text in (task, a, b):
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        digest.update(bytes([y]))
    return digest.hexdigest()


def _id_array(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=object).reshape(-1) if len(values) else np.empty(0, dtype=object)
    for value in array:
        if not isinstance(value, str):
            raise ValueError(f"pair ids must be strings, got {value!r} ({type(value).__name__})")
    return array


def item_rows(ids: Sequence[str]) -> dict[str, int]:
    """Each item id's row number; ValueError naming the first repeated id."""
    row: dict[str, int] = {}
    for index, item in enumerate(ids):
        if row.setdefault(item, index) != index:
            raise ValueError(f"item ids must be unique, {item!r} is repeated")
    return row


def rows_of(row: Mapping[str, int], ids: Iterable[str]) -> np.ndarray:
    """Row numbers of the ids (int64); ValueError naming the first id without a row."""
    out = []
    for item in ids:
        index = row.get(item)
        if index is None:
            raise ValueError(f"no vector for item {item!r}")
        out.append(index)
    return np.asarray(out, dtype=np.int64)


def is_missing(value: Any) -> bool:
    """True for None and NaN: an attribute or group value that is unknown."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_pairs(uri: str, task: str) -> PairSet:
    """Read id_a,id_b[,label] CSV (local or s3://); without a label column every pair is a positive."""
    # Imported here: pandas loads pyarrow, and the training DAG parses pair sources from this module at parse time.
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{uri}: not a readable pairs CSV: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in ("id_a", "id_b"):
        if column not in frame.columns:
            raise ValueError(f"{uri}: missing column {column!r} (columns: {', '.join(frame.columns)})")
    id_a = frame["id_a"].str.strip()
    id_b = frame["id_b"].str.strip()
    # Data rows are numbered from 1; the header is not counted.
    for column, values in (("id_a", id_a), ("id_b", id_b)):
        empty = np.flatnonzero((values == "").to_numpy())
        if len(empty):
            raise ValueError(f"{uri}: column {column!r} is empty in data row {empty[0] + 1}")
    same = np.flatnonzero((id_a == id_b).to_numpy())
    if len(same):
        raise ValueError(f"{uri}: data row {same[0] + 1} pairs item {id_a.iloc[same[0]]!r} with itself")
    if "label" in frame.columns:
        raw = frame["label"].str.strip()
        valid = raw.isin(("0", "1")).to_numpy()
        if not valid.all():
            row = int(np.flatnonzero(~valid)[0])
            raise ValueError(f"{uri}: column 'label' must be 0 or 1, got {raw.iloc[row]!r} in data row {row + 1}")
        label = (raw == "1").to_numpy().astype(np.int8)
    else:
        label = np.ones(len(frame), dtype=np.int8)
    return PairSet(task, id_a.to_numpy(dtype=object), id_b.to_numpy(dtype=object), label)


def parse_pair_source(value: str, *, base: str | Path | None = None, default_task: str | None = DEFAULT_TASK) -> tuple[str, str]:
    """'<pairs.csv>[:<task>]' as (uri, task), a relative local uri resolved against base when one is given.

    The task is the text after the last colon unless that text holds a '/' ('s3://bucket/pairs.csv' names none);
    a source naming no task gets default_task, or is refused when default_task is None.
    """
    text = value.strip()
    uri, colon, task = text.rpartition(":")
    if not colon or "/" in task:
        uri, task = text, default_task or ""
    if not uri or not re.fullmatch(_TASK_NAME, task):
        form = "'<pairs.csv>:<task>'" if default_task is None else "'<pairs.csv>' or '<pairs.csv>:<task>'"
        raise ValueError(f"pairs entry {value!r} must be {form}, e.g. 'matches.csv:labelled' (a task holds no ':', '/' or spaces)")
    return (storage.resolve(uri, base) if base is not None else uri), task


def format_pair_source(uri: str, task: str) -> str:
    """The '<uri>:<task>' text that parse_pair_source reads back."""
    return f"{uri}:{task}"
