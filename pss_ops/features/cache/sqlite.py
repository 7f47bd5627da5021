"""Local SQLite backend of the embedding cache: float32 vectors as blobs, safe for parallel local workers."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from pss_ops.features.cache.base import CacheKey, EmbeddingCache


class SQLiteEmbeddingCache(EmbeddingCache):
    """Local SQLite backend; float32 vectors stored as blobs, safe for parallel local workers."""

    _LOOKUP_CHUNK = 500

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._naming_the_file():
            # Local parallel workers share this file: WAL lets readers run beside one writer.
            self._conn = sqlite3.connect(path, timeout=60, isolation_level=None)
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA busy_timeout=60000")
                self._conn.execute(
                    """CREATE TABLE IF NOT EXISTS embeddings (
                           model_id TEXT NOT NULL,
                           item_id TEXT NOT NULL,
                           content_hash TEXT NOT NULL,
                           dim INTEGER NOT NULL,
                           vector BLOB NOT NULL,
                           updated_at REAL NOT NULL,
                           PRIMARY KEY (model_id, item_id)
                       ) WITHOUT ROWID"""
                )
            except BaseException:
                self._conn.close()
                raise

    def get_many(self, model_id: str, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        found: dict[CacheKey, np.ndarray] = {}
        wanted = dict(keys)
        ids = list(wanted)
        with self._naming_the_file():
            for start in range(0, len(ids), self._LOOKUP_CHUNK):
                chunk = ids[start : start + self._LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT item_id, content_hash, dim, vector FROM embeddings WHERE model_id = ? AND item_id IN ({marks})",
                    (model_id, *chunk),
                )
                for item_id, content_hash, dim, blob in rows:
                    if wanted.get(item_id) == content_hash:
                        vector = np.frombuffer(blob, dtype=np.float32)
                        if vector.shape[0] == dim:
                            found[(item_id, content_hash)] = vector
        return found

    def put_many(self, model_id: str, entries: Iterable[tuple[str, str, np.ndarray]]) -> None:
        now = time.time()
        rows = [
            (model_id, item_id, content_hash, int(vector.shape[0]), np.asarray(vector, np.float32).tobytes(), now)
            for item_id, content_hash, vector in entries
        ]
        with self._naming_the_file(), self._transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model_id, item_id, content_hash, dim, vector, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def delete_model(self, model_id: str) -> int:
        with self._naming_the_file(), self._transaction():
            cursor = self._conn.execute("DELETE FROM embeddings WHERE model_id = ?", (model_id,))
        return cursor.rowcount

    def count(self, model_id: str) -> int:
        """Entries held for a model."""
        with self._naming_the_file():
            return self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE model_id = ?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE, then COMMIT on a clean exit or ROLLBACK on an error, if SQLite has not rolled back already."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            # A full disk, an I/O error or no memory makes SQLite roll back by itself: a ROLLBACK then fails with
            # "cannot rollback - no transaction is active" and would replace the error that says what went wrong.
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """SQLite's errors name no file: re-raised with the cache's path (and the OS's reason when a folder refuses)."""
        try:
            yield
        except sqlite3.Error as err:
            cannot_write = getattr(err, "sqlite_errorname", "").startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY"))
            refusal = _refusal(self.path) if cannot_write else None
            if refusal is not None:
                raise refusal from err
            named = type(err)(f"{err}: {self.path}")
            vars(named).update(vars(err))  # sqlite_errorcode and sqlite_errorname: SQLITE_FULL, SQLITE_READONLY, ...
            raise named from err


def _refusal(path: str) -> OSError | None:
    """Why the filesystem refuses to let SQLite open or write path, as the OS would say it; None when it doesn't."""
    # "unable to open database file" is all SQLite says of a read-only disk (the WAL's -shm file can't be made).
    folder = Path(path).parent
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return None
    if read_only:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK)):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return None
