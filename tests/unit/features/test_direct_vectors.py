"""Precomputed vectors without a learned model skip the cache: the vectors embed computes directly from Arrow
are the ones the cache path computes, and any other config goes through the cache."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pss_ops.config import parse_config
from pss_ops.features.compound import compound_vectors, direct_vectors

ROWS = 500


def _config(features: list[dict]) -> object:
    return parse_config({"application": "direct", "features": features})


def _catalog(rng: np.random.Generator) -> pa.Table:
    image = rng.standard_normal((ROWS, 8)).astype(np.float32) * 3
    behaviour = rng.standard_normal((ROWS, 4)).astype(np.float64)
    return pa.table(
        {
            "item_id": [f"i{n}" for n in range(ROWS)],
            "title": [f"item {n}" for n in range(ROWS)],
            "image_vector": pa.array(list(image), pa.list_(pa.float32())),
            "behavior_vector": pa.array(list(behaviour), pa.list_(pa.float64())),
        }
    )


def test_direct_vectors_equal_the_cache_paths_compound() -> None:
    table = _catalog(np.random.default_rng(0))
    config = _config(
        [
            {"type": "precomputed", "column": "image_vector", "dim": 8, "weight": 2.0},
            {"type": "precomputed", "column": "behavior_vector", "dim": 4, "weight": 0.5},
        ]
    )
    direct = direct_vectors(table, config)
    assert direct is not None and direct.shape == (ROWS, 12) and direct.dtype == np.float32 and direct.flags.c_contiguous
    np.testing.assert_allclose(direct, compound_vectors(table.to_pandas(), config), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, atol=1e-6)
    # A sliced table (offsets not at 0), as a partition read in pieces can be.
    np.testing.assert_allclose(direct_vectors(table.slice(100, 50), config), direct[100:150], atol=1e-7)


def test_anything_else_goes_through_the_cache() -> None:
    table = _catalog(np.random.default_rng(1))
    with_text = _config([{"type": "precomputed", "column": "image_vector", "dim": 8}, {"type": "char_ngram", "fields": ["title"]}])
    assert direct_vectors(table, with_text) is None
    # A missing vector: the cache path makes its block zero, as for any compound.
    image = table.column("image_vector").to_pylist()
    image[3] = None
    holed = table.set_column(table.schema.get_field_index("image_vector"), "image_vector", pa.array(image, pa.list_(pa.float32())))
    assert direct_vectors(holed, _config([{"type": "precomputed", "column": "image_vector", "dim": 8}])) is None
