"""Exact top-K merge of per-partition search results with a heap keyed by the metric's direction."""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

PARTITION_SHIFT = 32  # packed id = partition number << 32 | row within the partition


def pack_ids(partition: int, rows: np.ndarray) -> np.ndarray:
    """Globally unique int64 ids from a partition number and local row numbers (-1 stays -1)."""
    packed = (np.int64(partition) << PARTITION_SHIFT) | rows.astype(np.int64)
    return np.where(rows < 0, -1, packed)


def unpack_ids(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of pack_ids: (partition numbers, local rows)."""
    return packed >> PARTITION_SHIFT, packed & ((1 << PARTITION_SHIFT) - 1)


def merge_topk(
    results: Iterable[tuple[np.ndarray, np.ndarray]], nq: int, k: int, *, higher_is_better: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Merge (scores, ids) blocks of shape (nq, k_i) into the exact best k per query, best first."""
    # faiss's ResultHeap keeps a per-query heap in C++; keep_max follows the metric direction.
    heap = faiss.ResultHeap(nq, k, keep_max=higher_is_better)
    for scores, ids in results:
        heap.add_result(np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    heap.finalize()
    return heap.D, heap.I
