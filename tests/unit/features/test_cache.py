"""SQLite embedding cache: hits need model id, item id and content hash; safe across processes."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from pss_ops.features.cache.backends import open_cache
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache

MODEL = "compound-0123456789abcdef"
OTHER_MODEL = "compound-fedcba9876543210"
TITLES = {
    "amazon:b000jz4hqo": "clickart 950 000 - premier image pack (dvd-rom)",
    "amazon:b0006zf55o": "ca international - arcserve lap/desktop oem 30pk",
    "amazon:b00004tkvy": "noah's ark activity center (jewel case ages 3-8)",
}


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def vector(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[SQLiteEmbeddingCache]:
    c = SQLiteEmbeddingCache(str(tmp_path / "cache" / "embeddings.sqlite"))
    yield c
    c.close()


def keys() -> list[tuple[str, str]]:
    return [(item, content_hash(title)) for item, title in TITLES.items()]


def fill(cache: SQLiteEmbeddingCache, model: str = MODEL) -> dict[tuple[str, str], np.ndarray]:
    stored = {key: vector(i) for i, key in enumerate(keys())}
    cache.put_many(model, [(item, h, v) for (item, h), v in stored.items()])
    return stored


def test_miss_then_hit(cache: SQLiteEmbeddingCache) -> None:
    assert cache.get_many(MODEL, keys()) == {}
    stored = fill(cache)
    found = cache.get_many(MODEL, keys())
    assert set(found) == set(stored)
    for key, value in stored.items():
        np.testing.assert_array_equal(found[key], value)
    assert cache.count(MODEL) == len(TITLES)


def test_partial_hit(cache: SQLiteEmbeddingCache) -> None:
    stored = fill(cache)
    wanted = [*keys()[:2], ("google:unknown", content_hash("new listing"))]
    assert set(cache.get_many(MODEL, wanted)) == set(keys()[:2]) == set(stored) - {keys()[2]}


def test_changed_content_hash_is_miss_and_put_replaces(cache: SQLiteEmbeddingCache) -> None:
    fill(cache)
    item = "amazon:b000jz4hqo"
    old_key = (item, content_hash(TITLES[item]))
    new_key = (item, content_hash("clickart 950 000 - premier image pack (dvd-rom) 2nd edition"))
    assert cache.get_many(MODEL, [new_key]) == {}
    fresh = vector(99)
    cache.put_many(MODEL, [(new_key[0], new_key[1], fresh)])
    found = cache.get_many(MODEL, [new_key])
    np.testing.assert_array_equal(found[new_key], fresh)
    # The old content is gone: one entry per item, and the old hash no longer hits.
    assert cache.get_many(MODEL, [old_key]) == {}
    assert cache.count(MODEL) == len(TITLES)


def test_other_model_entries_are_invisible(cache: SQLiteEmbeddingCache) -> None:
    fill(cache, OTHER_MODEL)
    assert cache.get_many(MODEL, keys()) == {}
    assert cache.count(MODEL) == 0
    assert len(cache.get_many(OTHER_MODEL, keys())) == len(TITLES)


def test_same_item_under_two_models_kept_apart(cache: SQLiteEmbeddingCache) -> None:
    key = keys()[0]
    cache.put_many(MODEL, [(key[0], key[1], vector(1))])
    cache.put_many(OTHER_MODEL, [(key[0], key[1], vector(2, dim=4))])
    np.testing.assert_array_equal(cache.get_many(MODEL, [key])[key], vector(1))
    np.testing.assert_array_equal(cache.get_many(OTHER_MODEL, [key])[key], vector(2, dim=4))


def test_delete_model_removes_only_that_model(cache: SQLiteEmbeddingCache) -> None:
    fill(cache, MODEL)
    extra = [("google:1", "h1", vector(10)), ("google:2", "h2", vector(11))]
    fill(cache, OTHER_MODEL)
    cache.put_many(OTHER_MODEL, extra)
    assert cache.delete_model(OTHER_MODEL) == len(TITLES) + len(extra)
    assert cache.count(OTHER_MODEL) == 0
    assert cache.get_many(OTHER_MODEL, keys()) == {}
    assert cache.count(MODEL) == len(TITLES)
    assert len(cache.get_many(MODEL, keys())) == len(TITLES)
    assert cache.delete_model(OTHER_MODEL) == 0


def test_vectors_round_trip_bit_exact_float32(cache: SQLiteEmbeddingCache) -> None:
    special = np.array(
        [0.1, -0.0, 1e-45, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1 / 3, -2.5e-8, 384.0],
        dtype=np.float32,
    )
    wide = np.random.default_rng(3).normal(size=384).astype(np.float32)
    cache.put_many(MODEL, [("a", "h", special), ("b", "h", wide)])
    found = cache.get_many(MODEL, [("a", "h"), ("b", "h")])
    for stored, back in ((special, found[("a", "h")]), (wide, found[("b", "h")])):
        assert back.dtype == np.float32
        assert back.shape == stored.shape
        assert back.tobytes() == stored.tobytes()


def test_float64_input_is_stored_as_float32(cache: SQLiteEmbeddingCache) -> None:
    value = np.array([1 / 3, 2 / 3, 0.1], dtype=np.float64)
    cache.put_many(MODEL, [("a", "h", value)])
    back = cache.get_many(MODEL, [("a", "h")])[("a", "h")]
    assert back.dtype == np.float32
    assert back.tobytes() == value.astype(np.float32).tobytes()


def test_two_cache_objects_on_one_file_share_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    worker_a = SQLiteEmbeddingCache(path)
    worker_b = SQLiteEmbeddingCache(path)
    try:
        worker_a.put_many(MODEL, [("amazon:1", "h1", vector(1))])
        worker_b.put_many(MODEL, [("amazon:2", "h2", vector(2))])
        for worker in (worker_a, worker_b):
            found = worker.get_many(MODEL, [("amazon:1", "h1"), ("amazon:2", "h2")])
            assert set(found) == {("amazon:1", "h1"), ("amazon:2", "h2")}
            np.testing.assert_array_equal(found[("amazon:1", "h1")], vector(1))
            np.testing.assert_array_equal(found[("amazon:2", "h2")], vector(2))
        assert worker_b.delete_model(MODEL) == 2
        assert worker_a.get_many(MODEL, [("amazon:1", "h1")]) == {}
    finally:
        worker_a.close()
        worker_b.close()


def test_entries_persist_after_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "persist.sqlite")
    first = SQLiteEmbeddingCache(path)
    first.put_many(MODEL, [("amazon:1", "h1", vector(1))])
    first.close()
    second = open_cache(f"sqlite:///{path}")
    try:
        assert set(second.get_many(MODEL, [("amazon:1", "h1")])) == {("amazon:1", "h1")}
    finally:
        second.close()


def test_lookup_over_many_keys_is_chunked(cache: SQLiteEmbeddingCache) -> None:
    n = 1234
    assert n > 2 * SQLiteEmbeddingCache._LOOKUP_CHUNK
    vectors = np.random.default_rng(5).normal(size=(n, 16)).astype(np.float32)
    entries = [(f"item-{i:05d}", f"hash-{i}", vectors[i]) for i in range(n)]
    cache.put_many(MODEL, entries)
    # Ask for every stored key plus misses spread across chunks and a stale hash for some items.
    wanted = [(item, h) for item, h, _ in entries]
    wanted += [(f"missing-{i}", "x") for i in range(0, n, 97)]
    stale = {f"item-{i:05d}" for i in range(0, n, 101)}
    wanted = [(item, "stale" if item in stale else h) for item, h in wanted]
    found = cache.get_many(MODEL, wanted)
    assert len(found) == n - len(stale)
    for i, (item, h, _) in enumerate(entries):
        if item in stale:
            assert (item, h) not in found
        else:
            np.testing.assert_array_equal(found[(item, h)], vectors[i])


def test_cache_file_is_sqlite_with_one_row_per_model_item(cache: SQLiteEmbeddingCache) -> None:
    fill(cache)
    fill(cache)
    with closing(sqlite3.connect(cache.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == len(TITLES)


def test_open_cache_refuses_remote_uri() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        open_cache("redis://localhost:6379/0")
