"""The review page's labelled-pairs CSV: id_a,id_b,label as `pss train-matcher --pairs` reads it, one row per pair.

read_labelled_pairs refuses a pair labelled twice with different labels, so "append and let the last label win"
would make a corrected label break training. Each label therefore rewrites the file (through storage.write_bytes:
a temporary file renamed onto it, never half written): a new pair is appended, a pair labelled again has its row
changed in place (every row of it, in either direction). Other columns and rows the page did not touch are kept
as they were.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pandas as pd

from pss_ops import storage
from pss_ops.matching.training import LABEL_COLUMNS
from pss_ops.quality.matching import pair_keys

LABELS = ("0", "1")


class ReviewError(ValueError):
    """pss review cannot start or cannot take a request: the message says what to change."""


def default_labels(run: str) -> str:
    """review/labelled_pairs.csv in the --run folder.

    Not directly in OUT: a process's first write into a folder sweeps dead writers' temporaries there, and in OUT
    one of those may be the staged link a killed pss run leaves for the next run to finish (orchestration.outputs).
    """
    return storage.join(run, "review", "labelled_pairs.csv")


def check_writable(uri: str) -> None:
    """Refuse, before serving anything, a labels path the page could not write."""
    if storage.is_s3(uri):
        return  # checked by the first write; a bucket's policy is not visible from here
    path = Path(uri)
    if path.is_dir():
        raise ReviewError(f"--labels {uri} is a folder; give a CSV file path")
    # The nearest folder that exists: the write creates the missing ones below it.
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir():
        raise ReviewError(f"cannot write labels to {uri}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReviewError(f"cannot write labels to {uri}: {existing} is not writable")


class LabelStore:
    """The labels of one CSV file, held in memory and written back whole on each change (thread-safe)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._rows = self._read()
        self._labels = self._by_key(self._rows)

    def _read(self) -> pd.DataFrame:
        if not storage.exists(self.uri):
            return pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})
        try:
            rows = pd.read_csv(io.BytesIO(storage.read_bytes(self.uri)), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ReviewError(f"--labels {self.uri} is not a readable CSV ({err}); give a labelled-pairs file or a new path") from None
        missing = [c for c in LABEL_COLUMNS if c not in rows.columns]
        if missing:
            raise ReviewError(
                f"--labels {self.uri} lacks column(s) {', '.join(missing)}; a labelled-pairs file has the header id_a,id_b,label"
            )
        labels = rows["label"].str.strip()
        bad = (~labels.isin(LABELS)).to_numpy().nonzero()[0]
        if len(bad):
            # A label-queue file holds empty labels: rewritten as it is, train-matcher would refuse it.
            raise ReviewError(
                f"--labels {self.uri} row {bad[0] + 1} (line {bad[0] + 2}): label must be 0 or 1, got {labels.iat[bad[0]]!r} "
                "(a label-queue file? pss review walks the queue itself: give a new --labels path)"
            )
        return rows

    @staticmethod
    def _by_key(rows: pd.DataFrame) -> dict[str, int]:
        keys = pair_keys(rows["id_a"].str.strip(), rows["id_b"].str.strip())
        # The last row wins here; the first change to such a pair makes all its rows agree.
        return dict(zip(keys.tolist(), rows["label"].str.strip().astype(int).tolist()))

    def get(self, id_a: str, id_b: str) -> int | None:
        """The pair's label (either direction), or None."""
        return self._labels.get(pair_keys([id_a], [id_b])[0])

    def keys(self) -> set[str]:
        """The pair keys (pss_ops.quality.matching.pair_keys) labelled so far."""
        with self._lock:
            return set(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def set(self, id_a: str, id_b: str, label: int) -> None:
        """Label a pair (1 same product, 0 not) and write the file; a pair labelled before gets the new label."""
        if label not in (0, 1):
            raise ReviewError(f"label must be 0 or 1, got {label!r}")
        key = pair_keys([id_a], [id_b])[0]
        with self._lock:
            rows = self._rows
            existing = pair_keys(rows["id_a"].str.strip(), rows["id_b"].str.strip()) == key
            if existing.any():
                rows = rows.copy()
                rows.loc[existing, "label"] = str(label)
            else:
                added = pd.DataFrame([{"id_a": id_a, "id_b": id_b, "label": str(label)}])
                rows = pd.concat([rows, added], ignore_index=True).fillna("")
            storage.write_bytes(self.uri, rows.to_csv(index=False).encode("utf-8"))
            self._rows = rows
            self._labels[key] = label
