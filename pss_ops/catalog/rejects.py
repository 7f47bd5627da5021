"""Rejected catalog rows: what one is, and the CSV they stream to (row, item_id, reason, record)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

from pss_ops import storage

REJECT_COLUMNS = ("row", "item_id", "reason", "record")


@dataclass(frozen=True)
class Reject:
    """One rejected row: its 1-based position in the file, its id, why, and the full record as JSON."""

    row: int
    item_id: str
    reason: str
    record: str


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
        try:
            self._writer.writerows((r.row, r.item_id, r.reason, r.record) for r in rejects)
        except OSError as err:
            # The error names the hidden temporary; the file the user knows is the rejects file.
            raise OSError(err.errno, err.strerror, self.uri) from err
        self.count += len(rejects)

    def __exit__(self, *exc: Any) -> None:
        try:
            self._handle.close()  # flushes: on a full disk this is where the write fails
        except OSError as err:
            self._target.__exit__(type(err), err, err.__traceback__)  # removes the temporary
            if exc[1] is not None:
                raise exc[1] from err
            raise OSError(err.errno, err.strerror, self.uri) from err
        self._target.__exit__(*exc)
