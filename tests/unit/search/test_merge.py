"""Exact top-K merge of per-shard faiss results equals brute force over all vectors."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from pss_ops.features.lexical import char_ngram_vectors
from pss_ops.search.merge import PARTITION_SHIFT, merge_topk, pack_ids, unpack_ids

CATALOG_CSV = Path(__file__).resolve().parents[3] / "data" / "amazon_google" / "catalog.csv"


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def shard_bounds(sizes: list[int]) -> list[tuple[int, int]]:
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def sharded_search(
    base: np.ndarray, queries: np.ndarray, sizes: list[int], k: int, metric: type = faiss.IndexFlatIP, higher_is_better: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Search each shard exactly, pack ids, merge; return scores and global row numbers."""
    assert sum(sizes) == len(base)
    bounds = shard_bounds(sizes)
    results = []
    for partition, (start, end) in enumerate(bounds):
        index = metric(base.shape[1])
        index.add(base[start:end])
        scores, rows = index.search(queries, k)
        results.append((scores, pack_ids(partition, rows)))
    scores, packed = merge_topk(results, len(queries), k, higher_is_better=higher_is_better)
    partitions, rows = unpack_ids(packed)
    starts = np.array([s for s, _ in bounds], dtype=np.int64)
    global_ids = np.where(packed < 0, -1, starts[np.clip(partitions, 0, None)] + rows)
    return scores, global_ids


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: type = faiss.IndexFlatIP) -> tuple[np.ndarray, np.ndarray]:
    index = metric(base.shape[1])
    index.add(base)
    return index.search(queries, k)


@pytest.mark.parametrize("k", [1, 10, 25])
def test_merge_equals_brute_force_random_unit_vectors(k: int) -> None:
    base = unit_vectors(3000, 32, seed=11)
    queries = np.vstack([base[::37], unit_vectors(40, 32, seed=12)])
    sizes = [211, 1290, 5, 901, 593]  # uneven; one shard smaller than k for k > 5
    scores, ids = sharded_search(base, queries, sizes, k)
    want_scores, want_ids = brute_force(base, queries, k)
    assert scores.shape == ids.shape == (len(queries), k)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    assert (ids >= 0).all()
    for got, want in zip(ids, want_ids):
        assert set(got.tolist()) == set(want.tolist())
    # Best first, and every score is the true inner product of the returned id.
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    recomputed = np.einsum("qd,qkd->qk", queries, base[ids])
    np.testing.assert_allclose(scores, recomputed, rtol=1e-5, atol=1e-6)
    # Queries taken from the base find themselves first.
    self_queries = np.arange(0, 3000, 37)
    np.testing.assert_array_equal(ids[: len(self_queries), 0], self_queries)


def test_merge_is_order_independent() -> None:
    base = unit_vectors(600, 16, seed=3)
    queries = unit_vectors(20, 16, seed=4)
    sizes = [100, 250, 250]
    bounds = shard_bounds(sizes)
    blocks = []
    for partition, (start, end) in enumerate(bounds):
        index = faiss.IndexFlatIP(16)
        index.add(base[start:end])
        d, i = index.search(queries, 8)
        blocks.append((d, pack_ids(partition, i)))
    forward = merge_topk(blocks, len(queries), 8)
    backward = merge_topk(blocks[::-1], len(queries), 8)
    np.testing.assert_array_equal(forward[0], backward[0])
    np.testing.assert_array_equal(forward[1], backward[1])


def test_merge_with_fewer_results_than_k_pads_with_minus_one() -> None:
    base = unit_vectors(7, 8, seed=5)
    queries = unit_vectors(3, 8, seed=6)
    scores, ids = sharded_search(base, queries, [3, 4], k=10)
    assert (ids[:, :7] >= 0).all()
    assert (ids[:, 7:] == -1).all()
    for row in ids:
        assert set(row[:7].tolist()) == set(range(7))
    want_scores, _ = brute_force(base, queries, 7)
    np.testing.assert_allclose(scores[:, :7], want_scores, rtol=1e-5, atol=1e-6)


def test_merge_l2_direction_lower_is_better() -> None:
    rng = np.random.default_rng(21)
    base = rng.normal(size=(1500, 24)).astype(np.float32)
    queries = rng.normal(size=(50, 24)).astype(np.float32)
    sizes = [400, 3, 620, 477]
    scores, ids = sharded_search(base, queries, sizes, k=12, metric=faiss.IndexFlatL2, higher_is_better=False)
    want_scores, want_ids = brute_force(base, queries, 12, metric=faiss.IndexFlatL2)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)
    for got, want in zip(ids, want_ids):
        assert set(got.tolist()) == set(want.tolist())
    assert (np.diff(scores, axis=1) >= -1e-4).all()
    # Merging L2 distances in the inner-product direction keeps the worst ones instead.
    wrong_scores, _ = sharded_search(base, queries, sizes, k=12, metric=faiss.IndexFlatL2, higher_is_better=True)
    assert not np.allclose(wrong_scores, want_scores)


def test_merge_equals_brute_force_on_real_titles() -> None:
    titles = pd.read_csv(CATALOG_CSV, dtype=str, keep_default_na=False, nrows=800)["title"].tolist()
    assert len(titles) == 800
    base = char_ngram_vectors(titles, ngram_min=3, ngram_max=5, dims=2048)
    queries = base[::8]
    k = 10
    sizes = [130, 301, 9, 250, 110]
    scores, ids = sharded_search(base, queries, sizes, k)
    want_scores, want_ids = brute_force(base, queries, k)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    recomputed = np.einsum("qd,qkd->qk", queries, base[ids])
    np.testing.assert_allclose(scores, recomputed, rtol=1e-5, atol=1e-5)
    exact_ids = 0
    for got, want, row_scores in zip(ids, want_ids, want_scores):
        assert len(set(got.tolist())) == k
        # Ids are only comparable away from ties at the k-th score.
        clear = row_scores > row_scores[-1] + 1e-5
        assert set(want[clear].tolist()) <= set(got.tolist())
        exact_ids += set(got.tolist()) == set(want.tolist())
    assert exact_ids >= len(queries) * 0.9
    # Each title's nearest neighbour is itself (or an identical title).
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_pack_unpack_round_trip() -> None:
    rows = np.array([0, 1, 17, 2**31 - 1, 2**32 - 1], dtype=np.int64)
    for partition in (0, 1, 7, 12345):
        packed = pack_ids(partition, rows)
        assert packed.dtype == np.int64
        assert len(set(packed.tolist())) == len(rows)
        parts, back = unpack_ids(packed)
        np.testing.assert_array_equal(parts, np.full(len(rows), partition))
        np.testing.assert_array_equal(back, rows)
    assert pack_ids(3, np.array([5]))[0] == (3 << PARTITION_SHIFT) + 5


def test_pack_ids_accepts_faiss_int64_and_int32_rows() -> None:
    for dtype in (np.int64, np.int32):
        packed = pack_ids(2, np.array([[0, 4], [9, -1]], dtype=dtype))
        assert packed.shape == (2, 2)
        parts, rows = unpack_ids(packed[packed >= 0])
        assert parts.tolist() == [2, 2, 2]
        assert rows.tolist() == [0, 4, 9]


def test_pack_keeps_minus_one() -> None:
    rows = np.array([[3, -1, -1], [-1, 0, 2]], dtype=np.int64)
    packed = pack_ids(4, rows)
    np.testing.assert_array_equal(packed == -1, rows == -1)
    parts, back = unpack_ids(packed[rows >= 0])
    assert parts.tolist() == [4, 4, 4]
    assert back.tolist() == [3, 0, 2]
