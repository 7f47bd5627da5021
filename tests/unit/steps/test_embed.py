"""The embed step, called directly on the real catalog subset (the run is tests/unit/conftest.py's `stepped`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pss_ops import layout, storage
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache
from pss_ops.features.embedded import read_vectors
from pss_ops.manifests import (
    EmbeddedPartition,
)
from pss_ops.steps.embed import embed_partition
from tests.unit.conftest import Stepped


def test_embed_unit_vectors_cache_hits_and_full_refresh(stepped: Stepped, tmp_path: Path) -> None:
    ctx = stepped.ctx.model_copy(update={"run_uri": str(tmp_path / "run")})
    partition = stepped.catalog_plan.partitions[-1]
    expected_ids = storage.read_parquet(partition.uri, columns=["item_id"]).column("item_id").to_pylist()
    cache = SQLiteEmbeddingCache(str(tmp_path / "fresh.sqlite"))
    try:
        first = embed_partition(ctx, partition, cache)
        assert (first.rows, first.cache_hits, first.cache_misses) == (partition.rows, 0, partition.rows)
        assert first.dim == ctx.config.dim == 384 + 1024
        assert cache.count(ctx.model_id) == partition.rows
        ids, vectors = read_vectors(first.uri)
        assert ids.column("item_id").to_pylist() == expected_ids
        assert vectors.shape == (partition.rows, ctx.config.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert EmbeddedPartition.read(layout.embed_manifest(ctx.run_uri, partition.name)) == first

        second = embed_partition(ctx, partition, cache)
        assert (second.cache_hits, second.cache_misses) == (partition.rows, 0)
        np.testing.assert_array_equal(read_vectors(second.uri)[1], vectors)

        refreshed_ctx = ctx.model_copy(update={"full_refresh": True})
        third = embed_partition(refreshed_ctx, partition, cache)
        assert (third.cache_hits, third.cache_misses) == (0, partition.rows)
        np.testing.assert_allclose(read_vectors(third.uri)[1], vectors, atol=1e-5)
    finally:
        cache.close()
    # The module's run read this partition from the shared cache: same vectors as computed fresh here.
    shared = next(e for e in stepped.embedded if e.name == partition.name)
    assert shared.cache_hits == partition.rows
    np.testing.assert_allclose(read_vectors(shared.uri)[1], vectors, atol=1e-5)
