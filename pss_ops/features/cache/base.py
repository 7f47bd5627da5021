"""The embedding cache's contract, keyed by model id + item id + content hash (paper §4.1)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np

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
