"""Accepted catalog batches regrouped by scope into fixed-size partitions, spilled to local disk meanwhile.

Partition names run in scope order, which is known only once the whole catalog has been read, so rows
wait on local disk (Arrow IPC files) rather than in memory: at most one partition per scope, or
PENDING_BYTES in all, is held before a spill.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

PENDING_BYTES = 256 << 20
GLOBAL_SCOPE = "*"


class ScopePartitioner:
    """Collects batches per scope in arrival order and emits partitions of partition_size rows, scopes sorted."""

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        *,
        scope_column: str | None,
        partition_size: int,
        pending_bytes: int = PENDING_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.schema = schema
        self.scope_column = scope_column
        self.size = partition_size
        self.pending_bytes = pending_bytes
        self._pending: dict[str, list[pa.RecordBatch]] = {}
        self._pending_rows: dict[str, int] = {}
        self._spills: dict[str, list[Path]] = {}
        self._bytes = 0
        self._files = 0
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Queue a batch's rows under their scopes, spilling full partitions (and everything, over budget)."""
        self.rows += batch.num_rows
        for scope, rows in self._by_scope(batch):
            self._pending.setdefault(scope, []).append(rows)
            self._pending_rows[scope] = self._pending_rows.get(scope, 0) + rows.num_rows
            self._bytes += rows.nbytes
            while self._pending_rows[scope] >= self.size:
                self._spill(scope, self.size)
        if self._bytes > self.pending_bytes:
            for scope in list(self._pending):
                self._spill(scope, self._pending_rows[scope])

    def _by_scope(self, batch: pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
        if batch.num_rows == 0:
            return
        if self.scope_column is None:
            yield GLOBAL_SCOPE, batch
            return
        encoded = pc.dictionary_encode(batch.column(self.scope_column))
        scopes = encoded.dictionary.to_pylist()
        if len(scopes) == 1:
            yield scopes[0], batch
            return
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(codes, kind="stable")  # keeps file order within a scope
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(scopes)))])
        for code, scope in enumerate(scopes):
            # take copies, so a small scope's rows do not keep the whole batch alive while they wait.
            yield scope, batch.take(pa.array(order[bounds[code] : bounds[code + 1]]))

    def _spill(self, scope: str, rows: int) -> None:
        table = pa.Table.from_batches(self._pending.pop(scope), schema=self.schema)
        self._files += 1
        path = self.directory / f"spill-{self._files:06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
            writer.write_table(table.slice(0, rows))
        self._spills.setdefault(scope, []).append(path)
        rest = table.slice(rows)
        self._pending_rows[scope] = rest.num_rows
        if rest.num_rows:
            self._pending[scope] = rest.to_batches()
        self._bytes = sum(b.nbytes for batches in self._pending.values() for b in batches)

    def _tables(self, scope: str) -> Iterator[pa.Table]:
        for path in self._spills.get(scope, []):
            with pa.OSFile(str(path), "rb") as source:
                table = pa.ipc.open_file(source).read_all()
            os.unlink(path)
            yield table
        if self._pending.get(scope):
            yield pa.Table.from_batches(self._pending.pop(scope), schema=self.schema)

    @property
    def scopes(self) -> list[str]:
        """Scopes that received rows, sorted."""
        return sorted(set(self._spills) | {s for s, rows in self._pending_rows.items() if rows})

    def emit(self, write: Callable[[str, pa.Table], None]) -> list[tuple[str, int]]:
        """Call write(scope, table) per partition, scopes sorted, rows in arrival order; returns (scope, rows) in order."""
        written: list[tuple[str, int]] = []
        for scope in self.scopes:
            chunk: list[pa.Table] = []
            filled = 0
            for table in self._tables(scope):
                offset = 0
                while offset < table.num_rows:
                    take = min(self.size - filled, table.num_rows - offset)
                    chunk.append(table.slice(offset, take))
                    filled += take
                    offset += take
                    if filled == self.size:
                        write(scope, pa.concat_tables(chunk))
                        written.append((scope, filled))
                        chunk, filled = [], 0
            if filled:
                write(scope, pa.concat_tables(chunk))
                written.append((scope, filled))
        return written
