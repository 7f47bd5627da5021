"""Embedding cache keyed by model id + item id + content hash (paper §4.1)."""

from __future__ import annotations

import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CacheKey = tuple[str, str]  # (item_id, content_hash)


class EmbeddingCache(ABC):
    """Backend-neutral cache: a hit needs the model id, the item id and the content hash to match."""

    @abstractmethod
    def get_many(self, model_id: str, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        """Vectors for the keys found; absent keys are misses."""

    @abstractmethod
    def put_many(self, model_id: str, entries: Iterable[tuple[str, str, np.ndarray]]) -> None:
        """Store (item_id, content_hash, vector) entries, replacing the item's older content."""

    @abstractmethod
    def delete_model(self, model_id: str) -> int:
        """Drop every entry of a model (after the model is retired); returns how many."""

    def close(self) -> None:  # noqa: B027 - optional hook; backends without connections keep it
        """Release connections."""


class SQLiteEmbeddingCache(EmbeddingCache):
    """Local SQLite backend; float32 vectors stored as blobs, safe for parallel local workers."""

    _LOOKUP_CHUNK = 500

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Local parallel workers share this file: WAL lets readers run beside one writer.
        self._conn = sqlite3.connect(path, timeout=60, isolation_level=None)
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

    def get_many(self, model_id: str, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        found: dict[CacheKey, np.ndarray] = {}
        wanted = dict(keys)
        ids = list(wanted)
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
        with self._transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model_id, item_id, content_hash, dim, vector, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def delete_model(self, model_id: str) -> int:
        with self._transaction():
            cursor = self._conn.execute("DELETE FROM embeddings WHERE model_id = ?", (model_id,))
        return cursor.rowcount

    def count(self, model_id: str) -> int:
        """Entries held for a model."""
        return self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE model_id = ?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def open_cache(uri: str, *, dynamodb_client: object | None = None) -> EmbeddingCache:
    """Open the backend a cache URI names: dynamodb://TABLE, sqlite:///path or a local path."""
    if uri.startswith("dynamodb://"):
        from pss_ops.cache_dynamodb import DynamoDBEmbeddingCache

        table = uri[len("dynamodb://") :].strip("/")
        if not table:
            raise ValueError(f"embedding cache URI {uri!r} names no table; use dynamodb://TABLE")
        if dynamodb_client is None:
            import boto3

            # Region, credentials and AWS_ENDPOINT_URL come from the environment the step runs in.
            dynamodb_client = boto3.client("dynamodb")
        return DynamoDBEmbeddingCache(dynamodb_client, table)
    if uri.startswith("sqlite:///"):
        uri = uri[len("sqlite:///") :]
    if "://" in uri:
        raise ValueError(f"unsupported embedding cache URI {uri!r}; use dynamodb://TABLE, sqlite:///path or a local path")
    return SQLiteEmbeddingCache(uri)
